"""The user-error type. A `NasError` is a mistake the user can fix (a bad flag, space file, budget,
dataset or study name): the `nas` command prints its message as one line and exits with status 2.
Any other exception that reaches the command is a bug and shows its traceback.

It is a ValueError, so code that validates values can keep catching ValueError; the command
catches NasError alone.
"""


class NasError(ValueError):
    """A mistake the user can fix; the message is one sentence that says what to do."""


class ConfigError(NasError):
    """An architecture or recipe that cannot exist (an even kernel, an unknown block, a pool that
    does not divide the final map, a budget no width fits)."""


class StorageError(NasError):
    """A study or output that cannot be written (a full disk, a read-only folder): every further write
    would fail the same way, so the command stops at once instead of failing trial after trial."""
