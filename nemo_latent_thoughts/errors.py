"""The one exception type users see: a single line naming the input and the fix."""


class NLTError(Exception):
    """A user-facing error; the CLI prints its message as one line, without a traceback."""
