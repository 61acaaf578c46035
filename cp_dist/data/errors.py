"""The one exception type for bad input data."""


class DataError(Exception):
    """Bad input: the message names the file (and line or field) and what was expected.

    The CLI prints it as one line and exits non-zero, without a traceback.
    """
