"""The one error type a user can cause, and the exit status it ends with.

Every layer raises :class:`UserError` with a message that names the problem and the fix; the command line
(``python -m robustart``, ``python -m robustart.compare``, ``python -m robustart.zoo``) prints it and exits with
:data:`USER_ERROR`. This module imports nothing, so any module may use it without a cycle.
"""

#: the exit status of an error in the user's input (a name, a path, a value, a checkpoint)
USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input (name, path, value, checkpoint), with the fix in the message."""
