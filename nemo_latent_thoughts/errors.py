"""The one exception type users see: a single line naming the input and the fix."""


class NLTError(Exception):
    """A user-facing error; the CLI prints its message as one line, without a traceback.

    Line breaks in the message (from a quoted input, say) are shown escaped, so it stays one line.
    """

    def __init__(self, message: str):
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))
