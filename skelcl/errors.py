"""The one exception type users see.

Anything raised as `SkelclError` is a problem with the user's input (a file, a field, an argument); the
command line prints its message on one line and exits non-zero, without a traceback.
"""


class SkelclError(Exception):
    """A user-facing error: the message names the file, line or field at fault."""
