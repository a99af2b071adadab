"""Stopping a run from outside: every way the platform delivers a stop becomes Ctrl-C's clean stop.

The clean stop is the one the runner already makes for Ctrl-C: its task is cancelled, so it
cancels its prompts on the server, saves the state in the ledger and prints how to resume. This
module routes the other stops there too, around the CLI's ``asyncio.run``:

==========================  =========================================================
stop                        delivered as
==========================  =========================================================
Ctrl-C                      SIGINT (every platform)
``kill PID``                SIGTERM (Linux, macOS; Windows has no such signal between
                            processes: ``taskkill /F`` and Task Manager end a process
                            at once)
closing the terminal        SIGHUP (Linux, macOS; ignored under ``nohup``)
Ctrl-Break                  SIGBREAK (Windows)
closing the console window  a console control event (Windows), turned into SIGBREAK
                            here; Windows ends the process 5 s later whatever it does
==========================  =========================================================

A second stop while the first is being handled ends the process at once, after two lines that
say so, with exit status 130 (as the clean stop). No exception is thrown into the stopping
code: one landing inside a library's own bookkeeping (an HTTP client's cancel scope, say) can
turn into a traceback. Nothing is lost by stopping at once either, as with ``kill -9``: the
ledger records before it acts, and the next run collects or resubmits what was in flight.

Example::

    with stop_signals(notify=print, resume="comfyline run-order orders/x") as stop:
        asyncio.run(stop.target(main()))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK")
"""The signals that stop a run, where the platform has them."""

_SAID = {
    "SIGINT": "Ctrl-C",
    "SIGTERM": "SIGTERM",
    "SIGHUP": "SIGHUP (the terminal closed)",
    "SIGBREAK": "Ctrl-Break or the console closing",
}

_CLOSE_EVENTS = (2, 5, 6)
"""Windows console control events that end the process: CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT and
CTRL_SHUTDOWN_EVENT (the ``signal`` module names only the Ctrl-C and Ctrl-Break events)."""

CLOSE_WAIT_S = 10.0
"""Windows: how long a closing console is held for the clean stop (Windows allows about 5 s)."""


EXIT_STOPPED = 130
"""The exit status of a run stopped from outside, cleanly or at once (as for Ctrl-C)."""


class StopSignals:
    """Turns the stop signals into one clean stop of the coroutine given to :meth:`target`.

    Made and installed by :func:`stop_signals`. ``stopping`` is set by the first stop signal.
    """

    def __init__(
        self,
        notify: Callable[[str], object],
        resume: str | None,
        hard_exit: Callable[[int], object],
    ) -> None:
        self._notify = notify
        self._resume = resume
        self._exit = hard_exit
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False

    async def target(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as the work a stop signal cancels: pass ``stop.target(main())`` to
        ``asyncio.run``."""
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        try:
            return await coro
        finally:
            self._task = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The handler of every stop signal (runs in the main thread, between two bytecodes)."""
        name = signal.Signals(signum).name
        said = _SAID.get(name, name)
        task, loop = self._task, self._loop
        if task is None or loop is None or task.done():
            # No run to stop cleanly (not started yet, or over): as Python's own Ctrl-C.
            raise KeyboardInterrupt(said)
        if self.stopping:
            self._stop_at_once(said)
            return
        self.stopping = True
        task.cancel()
        # As asyncio.run does for Ctrl-C: wake the loop if it is blocked waiting for I/O; and
        # print from the loop, not from inside whatever code the signal interrupted.
        loop.call_soon_threadsafe(
            self._say, f"{said}: stopping cleanly; press Ctrl-C again to stop at once"
        )

    def _stop_at_once(self, said: str) -> None:
        self._say(
            f"{said} while stopping: stopped at once, before the clean stop finished. Nothing "
            "recorded is lost: the next run collects or resends what was in flight."
        )
        if self._resume:
            self._say(f"Resume with: {self._resume}")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        self._exit(EXIT_STOPPED)

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a closed terminal cannot be told anything
            self._notify(line)


@contextlib.contextmanager
def stop_signals(
    notify: Callable[[str], object],
    resume: str | None = None,
    *,
    hard_exit: Callable[[int], object] = os._exit,
) -> Iterator[StopSignals]:
    """Within the block, every stop signal the platform has becomes a clean stop of the
    coroutine run through :meth:`StopSignals.target`, which then ends in ``KeyboardInterrupt``;
    a second one ends the process at once through ``hard_exit`` (``os._exit``: no cleanup
    runs). ``notify`` prints a line for the user; ``resume`` is the command that resumes the
    work. Signals are handled only in the main thread; elsewhere the block changes nothing.
    """
    stop = StopSignals(notify, resume, hard_exit)
    previous = _install(stop._on_signal)
    done = threading.Event()
    remove_close_watch = _watch_console_close(done) if previous else _nothing
    try:
        yield stop
    except asyncio.CancelledError:
        if stop.stopping:
            raise KeyboardInterrupt from None  # the clean stop is done: exit as Ctrl-C does
        raise
    finally:
        done.set()
        remove_close_watch()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _install(handler: Callable[[int, FrameType | None], None]) -> dict[int, Any]:
    """Install ``handler`` for each stop signal not ignored; the handlers it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN or current is None:
            # Ignored (nohup and friends): whoever ignored it meant it. None: a handler set
            # outside Python, which could not be put back.
            continue
        previous[signum] = current
        signal.signal(signum, handler)
    return previous


def _nothing() -> None:
    pass


def _watch_console_close(done: threading.Event) -> Callable[[], None]:
    """Windows: hold a closing console's process until the clean stop is ``done``.

    Windows runs console control handlers on a thread of its own and ends the process as soon as
    one returns from a close, logoff or shutdown event. Python's handler returns at once (it
    only flags SIGBREAK), so the run would die before stopping. This handler, called first,
    raises SIGBREAK in the main thread and waits. Returns the function that removes it.
    """
    if sys.platform != "win32":
        return _nothing
    import _thread
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

    def handler(event: int) -> bool:
        if event not in _CLOSE_EVENTS:
            return False  # Ctrl-C and Ctrl-Break: Python's own handler makes them signals
        _thread.interrupt_main(signal.SIGBREAK)
        done.wait(CLOSE_WAIT_S)
        return True

    callback = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)(handler)
    if not kernel32.SetConsoleCtrlHandler(callback, True):
        return _nothing  # no console to close

    def remove() -> None:
        kernel32.SetConsoleCtrlHandler(callback, False)  # also keeps callback alive until now

    return remove
