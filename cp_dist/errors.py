"""The one exception type a user sees: bad input data, a bad setting, a bad request."""


class UserError(Exception):
    """The message names the file (and line or field), the setting or the request, and what was
    expected. The CLI prints it as one line and exits 2, without a traceback."""
