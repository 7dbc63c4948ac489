"""Errors every command shares."""


class UserError(Exception):
    """A user's mistake (a busy port, a missing file): the command ends with its message and exit
    code 2, never a traceback."""
