"""The one exception type for bad input.

Anything a user can fix (a missing folder, a corrupt archive, a wrong param) raises
``UserError`` with a message that names the file or the param and says what to do.
Stage scripts and the CLI turn it into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message alone must tell the user what is wrong and how to fix it."""


class ConfigError(UserError):
    """A params.yaml value that is missing, of the wrong type, out of range or unknown."""
