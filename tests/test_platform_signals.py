"""Stopping a run from outside (comfyline.signals): SIGTERM and SIGHUP on POSIX, Ctrl-Break on
Windows make the same clean stop as Ctrl-C, and a second stop during the clean one ends the
run at once, saying so. In-process checks of the handler first, then ``comfyline run-order`` as
a child process against the simulator."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from comfyline.signals import STOP_SIGNALS, stop_signals
from comfyline.sim import running_simulator
from test_pipeline_support import (
    ROOT,
    check_finished,
    child_env,
    finish,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    single_order,
    status_of,
    wait_for,
)

PRESENT = [name for name in STOP_SIGNALS if hasattr(signal, name)]
CLEAN_STOP = ": stopping cleanly; press Ctrl-C again to stop at once"
FORCED_STOP = "stopped at once, before the clean stop finished."


async def forever() -> None:
    await asyncio.Event().wait()  # never set: only a stop ends it


# -- in process ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESENT)
def test_a_stop_signal_cancels_the_run_and_ends_in_keyboard_interrupt(name: str) -> None:
    signum = getattr(signal, name)
    before = signal.getsignal(signum)
    lines: list[str] = []
    cleanup: list[str] = []

    async def run() -> None:
        try:
            signal.raise_signal(signum)
            await forever()
        except asyncio.CancelledError:
            cleanup.append("saved")  # the run's clean stop: it gets to finish
            raise

    with pytest.raises(KeyboardInterrupt):
        with stop_signals(notify=lines.append, resume="comfyline run-order o") as stop:
            asyncio.run(stop.target(run()))
    assert cleanup == ["saved"]
    assert len(lines) == 1 and lines[0].endswith(CLEAN_STOP), lines
    assert stop.stopping
    assert signal.getsignal(signum) is before  # put back


def test_a_second_signal_during_the_clean_stop_stops_at_once_and_says_so() -> None:
    first, second = (getattr(signal, n) for n in (PRESENT[-1], "SIGINT"))
    lines: list[str] = []
    reached: list[str] = []

    def hard_exit(code: int) -> None:  # os._exit would end the test run too
        raise SystemExit(code)

    async def run() -> None:
        try:
            signal.raise_signal(first)
            await forever()
        except asyncio.CancelledError:
            signal.raise_signal(second)  # Ctrl-C again while the run is stopping
            reached.append("the rest of a clean stop that was cut short")

    with pytest.raises(SystemExit) as info:
        with stop_signals(lines.append, "comfyline run-order o", hard_exit=hard_exit) as stop:
            asyncio.run(stop.target(run()))
    assert info.value.code == 130
    assert reached == [] and stop.stopping
    assert lines[1:] == [
        "Ctrl-C while stopping: " + FORCED_STOP + " Nothing recorded is lost: the next run "
        "collects or resends what was in flight.",
        "Resume with: comfyline run-order o",
    ]


def test_a_run_that_ends_by_itself_is_untouched() -> None:
    async def run() -> int:
        return 7

    lines: list[str] = []
    with stop_signals(notify=lines.append) as stop:
        assert asyncio.run(stop.target(run())) == 7
    assert lines == [] and not stop.stopping


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_an_ignored_signal_stays_ignored() -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_signals(notify=print):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[Any] = []

    def in_thread() -> None:
        with stop_signals(notify=print):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(timeout=30)
    assert seen == [signal.getsignal(signal.SIGINT)]


# -- the CLI as a child process ------------------------------------------------------------------

if sys.platform == "win32":
    # Windows delivers no SIGTERM between processes; Ctrl-Break reaches a child started in its
    # own process group (which also ignores Ctrl-C).
    STOPS = [signal.CTRL_BREAK_EVENT]
    FIRST_AND_SECOND = (signal.CTRL_BREAK_EVENT, signal.CTRL_BREAK_EVENT)
    GROUP = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    STOPS = [signal.SIGTERM, signal.SIGHUP]
    FIRST_AND_SECOND = (signal.SIGTERM, signal.SIGINT)
    GROUP = {}


def start_runner(order_file: Path, url: str, output_root: Path) -> subprocess.Popen[str]:
    """``python -m comfyline run-order ORDER --comfyui URL --output-root DIR``, in a process
    group of its own on Windows so that it can be sent Ctrl-Break."""
    return subprocess.Popen(
        [sys.executable, "-m", "comfyline", "run-order", str(order_file)]
        + ["--comfyui", url, "--output-root", str(output_root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=ROOT,
        **GROUP,
    )


@pytest.mark.parametrize("stop", STOPS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_cancels_on_the_server_saves_the_state_and_says_how_to_resume(
    tmp_path: Path, stop: int
) -> None:
    order_file = single_order(tmp_path / "orders", "stop", 6)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.3)) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        wait_for(
            lambda: (s := status_of(order_file, out_root)) is not None and s.counts.submitted,
            "the ledger to show a slot submitted",
        )
        wait_for(lambda: server_queue(sim.url), "the prompt on the server")
        runner.send_signal(stop)
        code, printed = finish(runner)

        assert code == 130, printed
        assert CLEAN_STOP in printed
        assert f"Resume with: comfyline run-order {order_file}" in printed
        assert "Traceback" not in printed
        assert server_queue(sim.url) == []  # our prompts are gone from the server
        status = status_of(order_file, out_root)
        assert status is not None
        assert status.order.state.value == "cancelled"
        assert status.counts.submitted == 0
        assert not status.running


class HoldingProxy:
    """A TCP proxy in front of a server that forwards every byte, except that it never forwards
    (nor answers) a request deleting prompts from the queue (``POST /queue``): a client that
    cancels its prompts through it waits there. ``held`` is set when it holds one."""

    def __init__(self, upstream_url: str) -> None:
        host, port = upstream_url.removeprefix("http://").rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.held = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and b"POST /queue " in data:
                    self.held.set()
                    return  # never forwarded: this connection waits until closed
                sink.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@contextmanager
def holding_proxy(upstream_url: str) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(upstream_url)
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_second_stop_during_the_clean_stop_ends_the_run_at_once_and_it_resumes(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "twice", 6)
    out_root = tmp_path / "out"
    first, second = FIRST_AND_SECOND
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.3)) as sim:
        with holding_proxy(sim.url) as proxy:
            runner = start_runner(order_file, proxy.url, out_root)
            wait_for(lambda: server_queue(sim.url), "a prompt on the server")
            runner.send_signal(first)
            # The clean stop is now waiting for the server to delete our prompts: stop again.
            assert proxy.held.wait(timeout=30), "the runner did not cancel its prompts"
            runner.send_signal(second)
            code, printed = finish(runner)

        assert code == 130, printed
        assert FORCED_STOP in printed
        assert f"Resume with: comfyline run-order {order_file}" in printed
        assert "Traceback" not in printed
        status = status_of(order_file, out_root)
        assert status is not None and not status.running
        assert status.order.state.value != "cancelled"  # the clean stop did not get that far

        report, _ = run_in_process(order_file, settings_for(sim.url, out_root))

    assert report.order.state == "completed"
    check_finished(order_file, out_root)
