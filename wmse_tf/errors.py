"""Errors a user can fix: the command-line entry points print them as one `error:` line, exit 2.

A leaf module (imports nothing of ours), so library code can raise them without pulling in
absl. `wmse_tf.cli.run` catches `UserError`; anything else keeps its traceback.

Example:
    >>> raise wmse_tf.errors.UserError("--model=runs/x: no encoder.keras there; train first")
"""


class UserError(Exception):
    """A mistake in the user's input or setup; the message says what and how to fix it."""


class DatasetNotFoundError(UserError, ValueError):
    """A registered dataset is not available locally; the message says how to get it."""
