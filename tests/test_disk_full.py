"""A full disk while a run writes an image or its ledger: one clear line (which file, the space
left, what to do), the order stopped as interrupted with its resume command, nothing
half-written, no traceback; the next run finishes it.

Without root there is no small file system to fill, so the runner runs under a file size limit
(``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored): a write past it fails with ``EFBIG`` exactly as a
full disk fails with ``ENOSPC``, at a size the test chooses. ``ENOSPC`` and ``EDQUOT`` are
checked on the same mapping directly."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comfyline.disk import full_disk_error
from comfyline.errors import DiskFull
from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    ROOT,
    check_finished,
    child_env,
    finish,
    image_files,
    output_folder,
    sim_config,
    single_order,
    start_runner,
    status_of,
    temp_files,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")

_LIMITED = (
    "import os, resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'comfyline', *sys.argv[2:]])\n"
)
"""Run ``comfyline ARGS`` in a process that may write no file larger than LIMIT bytes."""


def _run_limited(limit: int, order_file: Path, url: str, out_root: Path) -> tuple[int, str]:
    args = ["run-order", str(order_file), "--comfyui", url, "--output-root", str(out_root)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _LIMITED, str(limit), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    return finish(proc)


def _check_stopped_cleanly(order_file: Path, out_root: Path, code: int, printed: str) -> None:
    assert code == 1, printed
    assert "Traceback" not in printed, printed
    assert "free there" in printed and "run the same command again" in printed
    assert f"Resume with: comfyline run-order {order_file}" in printed
    folder = output_folder(order_file, out_root)
    assert temp_files(folder) == []
    for path in image_files(folder).values():  # whatever is there is whole
        with Image.open(path) as image:
            image.load()
    status = status_of(order_file, out_root)
    assert status is not None and status.order.state.value == "running"  # status: interrupted


def test_an_image_past_the_limit_stops_the_run_and_the_next_run_finishes_it(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "fullimage", 3, quality="high")
    out_root = tmp_path / "out"
    # The second prompt's image is noise (384x384, ~440 KB); every other file stays far below
    # 300 KB (the ledger's write-ahead log is about 110 KB when the order starts and grows
    # about 30 KB an image).
    faults = Faults(noise_images_on_prompts=(2,))
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        code, printed = _run_limited(300_000, order_file, sim.url, out_root)
        _check_stopped_cleanly(order_file, out_root, code, printed)
        assert "DiskFull: cannot write" in printed and ".png: the file would be larger" in printed

        code, printed = finish(start_runner(order_file, sim.url, out_root))
    assert code == 0, printed
    check_finished(order_file, out_root)


def test_the_ledger_past_the_limit_stops_the_run_and_the_next_run_finishes_it(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "fullledger", 12)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        # Images (~17 KB) fit; the ledger's write-ahead log, about 115 KB once the order is
        # opened and planned, grows past 200 KB during the run (about 30 KB an image).
        code, printed = _run_limited(200_000, order_file, sim.url, out_root)
        _check_stopped_cleanly(order_file, out_root, code, printed)
        assert "ledger.sqlite3: the system refused a write" in printed

        code, printed = finish(start_runner(order_file, sim.url, out_root))
    assert code == 0, printed
    check_finished(order_file, out_root)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "quota"),
        (errno.EFBIG, "file size limit"),
    ],
)
def test_each_full_disk_code_names_the_file_and_the_space_left(
    tmp_path: Path, code: int, words: str
) -> None:
    path = tmp_path / "out" / "0001_x.png"
    error = full_disk_error(OSError(code, "no"), path)
    assert isinstance(error, DiskFull)
    assert str(path) in str(error) and words in str(error)
    assert error.free_bytes is not None and error.free_bytes > 0
    assert "free there" in str(error)


def test_other_write_errors_are_not_a_full_disk(tmp_path: Path) -> None:
    assert full_disk_error(PermissionError(errno.EACCES, "denied"), tmp_path / "x") is None
