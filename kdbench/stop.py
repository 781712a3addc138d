"""Stopping training cleanly: a process-wide request, honoured at the next step boundary.

A scheduler's preemption signal or Ctrl-C calls :func:`request_stop`; every
training loop of the process sees it through the ``should_stop`` callable it
was given (:func:`stop_requested`), saves its state at the end of its step and
raises :class:`StopRequested`, so the next run resumes bit for bit. A signal
handler may call :func:`request_stop`: it only sets a flag.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class StopRequested(BaseException):
    """Raised by the engine at a step boundary, after saving its state, once a stop was requested.
    A BaseException, like KeyboardInterrupt, so "record the failure" handlers let it pass."""


_stop = threading.Event()


def request_stop() -> None:
    """Ask every training loop of this process to save its state and stop at the end of its step."""
    _stop.set()


def stop_requested() -> bool:
    """Whether a stop was requested (the engine's ``should_stop``)."""
    return _stop.is_set()


def clear_stop() -> None:
    """Forget a stop request (before new work starts)."""
    _stop.clear()


def _stop_at_step_end(signum, frame) -> None:
    """The first signal asks the loop to stop at the end of its step (exact resumption);
    a second one interrupts at once."""
    if stop_requested():
        raise KeyboardInterrupt
    request_stop()


@contextlib.contextmanager
def graceful_interrupt(signals=(signal.SIGINT,)):
    """Inside this block, ``signals`` (Ctrl-C by default) stop training at a step boundary with
    its state saved, and the block raises KeyboardInterrupt. Outside the main thread it does nothing
    (only the main thread may install signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop_at_step_end) for s in signals}
    try:
        yield
    except StopRequested as exc:
        raise KeyboardInterrupt(str(exc)) from exc
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        clear_stop()
