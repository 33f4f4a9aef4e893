"""Shared runner of the command-line entry points: user errors as one `error:` line, exit 2.

`run(main)` is `absl.app.run(main)` except that a user error -- a flag absl rejects (a
missing --flagfile, a required flag left out, an unknown flag), `errors.UserError` (a
`config.ConfigError`, a `data.DatasetNotFoundError`, ...) or `app.UsageError` -- prints
one line `error: ...` on stderr and exits with code 2. Other exceptions are programming
errors and keep their traceback.

Example:
    >>> if __name__ == "__main__":
    ...     cli.run(main)
"""

import contextlib
import os
import sys

from absl import app, flags

from wmse_tf.errors import UserError

EXIT_USER_ERROR = 2


def error_line(message) -> str:
    """`error: <message>` on one line (newlines and runs of spaces collapsed)."""
    return "error: " + " ".join(str(message).split())


def fail(message) -> int:
    """Prints `error_line(message)` on stderr; returns EXIT_USER_ERROR."""
    print(error_line(message), file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def parse_flags(argv):
    """absl's flag parsing, with its errors as one `error:` line and exit code 2."""
    for arg in argv[1:]:
        name, eq, path = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == "flagfile" and eq and not os.path.isfile(os.path.expanduser(path)):
            sys.exit(fail(f"--flagfile={path}: no such file (from {os.getcwd()}); give the path of a "
                          "flags file, e.g. --flagfile=configs/cifar10.flags"))
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e).removeprefix("ERROR::").strip()
        sys.exit(fail(f"{message} (see --helpshort)"))


def run(main, argv=None):
    """`absl.app.run(main, argv)` with user errors as one `error:` line, exit code 2."""

    def guarded(args):
        try:
            return main(args)
        except (UserError, app.UsageError) as e:
            return fail(e)

    app.run(guarded, argv=argv, flags_parser=parse_flags)


@contextlib.contextmanager
def about(flag, value, *types):
    """Re-raises exceptions of `types` (default OSError, ValueError) as UserError naming `--flag=value`.

    Only for the short calls that interpret one flag's value (open a path, look up a name).
    """
    try:
        yield
    except UserError as e:
        raise UserError(f"--{flag}={value}: {e}") from e
    except (types or (OSError, ValueError)) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) adds quotes
        raise UserError(f"--{flag}={value}: {text}") from e
