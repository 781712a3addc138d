"""Stopping training cleanly: a process-wide request, honoured at the next step boundary.

A scheduler's preemption signal, Ctrl-C (SIGINT) or SIGTERM calls :func:`request_stop`;
every training loop of the process sees it through the ``should_stop`` callable it
was given (:func:`stop_requested`), saves its state at the end of its step and
raises :class:`StopRequested`, so the next run resumes bit for bit. A signal
handler may call :func:`request_stop`: it only sets a flag. The suite then ends
with :class:`Interrupted`, whose ``exit_code`` is the shell's convention for the
signal: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """Raised by the engine at a step boundary, after saving its state, once a stop was requested.
    A BaseException, like KeyboardInterrupt, so "record the failure" handlers let it pass."""


class Interrupted(KeyboardInterrupt):
    """The suite stopped because of a signal (work in progress saved); ``exit_code`` = 128 + signal."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_stop = threading.Event()
_signal: dict[str, Optional[int]] = {"num": None}


def request_stop(signum: Optional[int] = None) -> None:
    """Ask every training loop of this process to save its state and stop at the end of its step
    (``signum``: the signal that asked, which decides the exit code)."""
    if signum is not None and _signal["num"] is None:
        _signal["num"] = int(signum)
    _stop.set()


def stop_requested() -> bool:
    """Whether a stop was requested (the engine's ``should_stop``)."""
    return _stop.is_set()


def interrupted(message: str = "interrupted") -> Interrupted:
    """The exception that ends the suite for the stop requested so far (SIGINT if none said which)."""
    return Interrupted(message, _signal["num"] or signal.SIGINT)


def clear_stop() -> None:
    """Forget a stop request (before new work starts)."""
    _stop.clear()
    _signal["num"] = None


def _stop_at_step_end(signum, frame) -> None:
    """The first signal asks the loop to stop at the end of its step (exact resumption);
    a second one interrupts at once."""
    if stop_requested():
        raise interrupted("interrupted again: stopped at once")
    request_stop(signum)


def _raise_at_once(signum, frame) -> None:
    request_stop(signum)
    raise interrupted()


@contextlib.contextmanager
def graceful_interrupt(signals=STOP_SIGNALS):
    """Inside this block, ``signals`` (Ctrl-C and SIGTERM by default) stop training at a step boundary
    with its state saved, and the block raises :class:`Interrupted`. Outside the main thread it does
    nothing (only the main thread may install signal handlers)."""
    with _handling(signals, _stop_at_step_end):
        yield


@contextlib.contextmanager
def interrupt_at_once(signals=STOP_SIGNALS):
    """Inside this block, ``signals`` raise :class:`Interrupted` at once: for a process that trains
    nothing itself (it waits for workers, which it then asks to stop)."""
    with _handling(signals, _raise_at_once):
        yield


@contextlib.contextmanager
def _handling(signals, handler):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    except StopRequested as exc:
        raise interrupted(str(exc)) from exc
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise interrupted(str(exc)) from exc
    finally:
        for s, handler_before in previous.items():
            signal.signal(s, handler_before)
        clear_stop()
