"""The project's own error types: problems a user can fix (a bad file, input or config key).

`python -m clip_backdoor` prints these as one line and exits 2; any other exception is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's files, inputs or config; the message names the file or key."""


class ConfigError(UserError, ValueError):
    """A config value that cannot be used; the message names the dotted key."""


class DataError(UserError):
    """A prepared data file that is missing, unreadable or does not match its recorded hash."""


class MissingDataError(DataError, FileNotFoundError):
    """A prepared data file or folder that does not exist."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, truncated, altered or not weights-only."""


class UntrustedWeightsError(UserError):
    """Third-party weights that would run code when loaded and do not match a trusted hash."""
