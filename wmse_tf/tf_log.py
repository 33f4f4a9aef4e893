"""TensorFlow's C++ log, off in wmse_tf's commands unless the user asks for it (no TF here).

In a command, `python -m wmse_tf.<command>` or `python -m zoo.<command>`, and in its child processes,
`quiet()` (called by `import wmse_tf`, before TensorFlow is imported) sets TF_CPP_MIN_LOG_LEVEL=3, and
an import hook drops the lines absl writes to stderr while TensorFlow loads (oneDNN's notice, the CUDA
stub's), which no variable silences. The command then prints its own lines and Keras' progress, not
TensorFlow's log (the CUDA probe's errors on a machine without GPU, XLA's and oneDNN's notices). A user
who set TF_CPP_MIN_LOG_LEVEL gets TensorFlow's log as TensorFlow writes it:
`TF_CPP_MIN_LOG_LEVEL=0 python -m wmse_tf.train ...` shows all of it. A library user's process is left alone.

Example:
  >>> from wmse_tf import tf_log
  >>> tf_log.quiet({}, ["python", "-m", "wmse_tf.train"])
  True
"""

import importlib.machinery
import os
import re
import sys
import tempfile

VAR = "TF_CPP_MIN_LOG_LEVEL"
MARK = "WMSE_TF_TF_LOG"  # set beside VAR by quiet(): a child process keeps the command's choice
COMMAND_PACKAGES = ("wmse_tf", "zoo")
_PATH = importlib.machinery.PathFinder
# What absl writes while TensorFlow loads, before TF applies VAR: its warning and I/W/E lines.
_EARLY = re.compile(rb"WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ ")


def command_module(argv=None):
    """The module this process runs as `python -m <module>` (from `sys.orig_argv`), else None."""
    args = iter((sys.orig_argv if argv is None else argv)[1:])
    for arg in args:
        if arg in ("-W", "-X", "--check-hash-based-pycs"):  # interpreter options with a value
            next(args, None)
        elif arg.startswith("-m"):
            return arg[2:] or next(args, None)
        elif arg in ("-", "-c") or not arg.startswith("-"):  # stdin, -c, a script
            return None
    return None


def quiet(environ=None, argv=None):
    """In a command of COMMAND_PACKAGES (or a child of one), VAR=3 and the import hook, unless the user
    set VAR; returns whether it did. TensorFlow reads VAR once, when first imported."""
    environ = os.environ if environ is None else environ
    if VAR in environ:
        if environ.get(MARK) != environ[VAR]:
            return False  # the user's
    elif (command_module(argv) or "").split(".")[0] not in COMMAND_PACKAGES:
        return False
    environ[VAR] = environ[MARK] = "3"
    if environ is os.environ and "tensorflow" not in sys.modules and _hook not in sys.meta_path:
        # After the other finders (wmse_tf.onednn's decides at the same import), before the path's.
        finders = sys.meta_path
        finders.insert(finders.index(_PATH) if _PATH in finders else len(finders), _hook)
    return True


class _QuietLoader:
    """TensorFlow's own loader, with the _EARLY lines it writes to stderr dropped."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved, captured = os.dup(2), tempfile.TemporaryFile()
        os.dup2(captured.fileno(), 2)
        try:
            self._loader.exec_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            os.write(2, b"".join(line for line in captured if not _EARLY.match(line)))
            captured.close()


class _OnTensorFlowImport:
    """A meta-path finder that loads TensorFlow through _QuietLoader, once."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = _PATH.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_hook = _OnTensorFlowImport()
