"""Errors a user can cause: the CLI prints them as one line and exits with code 2.

``FAILURES`` is what a plugin (task, method) may raise that fails only the run (or
teacher) it was working on: every exception, ``SystemExit`` included. Only
``KeyboardInterrupt`` and :class:`kdbench.run.stop.StopRequested` stop the whole suite.
"""


class UserError(Exception):
    """A problem with the user's input (suite, plugin, path, params), not a kdbench bug."""


FAILURES = (Exception, SystemExit)


def without_cpp_frames(exc: BaseException) -> str:
    """``str(exc)`` without the C++ stack frames torch appends to its errors (with
    ``TORCH_SHOW_CPP_STACKTRACES=1`` they run to kilobytes): a message for one line."""
    return str(exc).split("\nException raised from")[0]
