"""A slot is done only after its image is checked: orders run through ``pipeline.generate``
against a simulator that sends images that do not decode, are cut short, have the wrong size,
or whose download is cut off. Such an image is never kept as a finished one. And a file cut off
while it is written never stands under its final name."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    check_finished,
    image_files,
    output_folder,
    pixels,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    status_of,
    temp_files,
)

BAD_IMAGES = ["corrupt_image_on_prompts", "truncated_image_on_prompts", "wrong_size_on_prompts"]
EVERY_ATTEMPT = tuple(range(1, 11))
"""Execution counts covering every attempt one run makes of a one-slot order."""


@pytest.mark.parametrize("fault", BAD_IMAGES)
def test_a_slot_whose_image_is_bad_is_never_done(tmp_path: Path, fault: str) -> None:
    order_file = single_order(tmp_path / "orders", "bad-image", 1)
    out_root = tmp_path / "out"
    config = sim_config(tmp_path, faults=Faults(**{fault: EVERY_ATTEMPT}))
    with running_simulator(config) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    folder = output_folder(order_file, out_root)
    assert report.images == [], printed
    (error,) = report.errors
    assert (error.index, error.type) == (0, "ImageInvalid"), error
    assert report.order.state == "failed"
    status = status_of(order_file, out_root)
    assert status is not None
    assert (status.counts.done, status.counts.failed) == (0, 1)
    assert image_files(folder) == {}  # nothing of the bad image is left as a finished one
    assert temp_files(folder) == []
    # Each attempt reached the server once and was refused on our side (a retry of the same
    # graph is answered from the server's cache: started, not executed again).
    assert stats["started"] == error.attempts >= 1
    assert stats["executed"] + stats["cached"] == error.attempts


@pytest.mark.parametrize("fault", BAD_IMAGES)
def test_a_bad_first_image_is_made_again_and_only_the_good_one_kept(
    tmp_path: Path, fault: str
) -> None:
    order_file = single_order(tmp_path / "orders", "bad-once", 1)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, faults=Faults(**{fault: (1,)}))) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    finished = check_finished(order_file, out_root)
    (image,) = report.images
    assert image.attempts == 2, printed
    assert stats["executed"] == 2
    (path,) = finished.images.values()
    with Image.open(path) as png:
        png.load()
        assert png.size == (image.parameters["width"], image.parameters["height"])
    # The kept image is the second execution's, byte for byte in its pixels (the retry saves
    # under its own prefix, so the server makes a new file instead of answering from its cache).
    (second,) = (tmp_path / "comfy-out" / "comfyline" / "bad-once").glob("img_a2_*.png")
    assert pixels(path) == pixels(second)


def test_a_download_cut_off_is_fetched_again_whole(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "short-view", 2)
    out_root = tmp_path / "out"
    config = sim_config(tmp_path, faults=Faults(short_view_on_prompts=(1, 2)))
    with running_simulator(config) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    finished = check_finished(order_file, out_root)
    assert stats["short_views"] == 2, printed
    # A download cut off is fetched again, not made again.
    assert stats["executed"] == 2
    assert [image.attempts for image in report.images] == [1, 1]
    server_files = sorted((tmp_path / "comfy-out" / "comfyline" / "short-view").glob("*.png"))
    ours = [finished.images[stem] for stem in sorted(finished.images)]
    assert [pixels(p) for p in ours] == [pixels(p) for p in server_files]


# The write cut off: a child process whose file size limit (RLIMIT_FSIZE) stops the write in
# the middle, as a full disk would. images.write_atomic is what every image, report and sheet
# is written with.
_CUT_WRITE = """
import resource, signal, sys
from pathlib import Path
from comfyline.errors import DiskFull
from comfyline.images import write_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_atomic(Path(sys.argv[1]), b"new " * 4096)
except DiskFull as exc:  # a full disk, said as such (the EFBIG is its cause)
    print(type(exc).__name__, getattr(exc.__cause__, "errno", None))
"""


def test_a_write_cut_off_midway_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "0001_42.png"
    target.write_bytes(b"old image")
    done = subprocess.run(
        [sys.executable, "-c", _CUT_WRITE, str(target)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["DiskFull", str(errno.EFBIG)], done.stdout + done.stderr
    assert target.read_bytes() == b"old image"  # never a partial file under the final name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001_42.png"]  # no temp file left


def test_a_write_cut_off_midway_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "0001_42.png"
    done = subprocess.run(
        [sys.executable, "-c", _CUT_WRITE, str(target)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["DiskFull", str(errno.EFBIG)], done.stdout + done.stderr
    assert list(target.parent.iterdir()) == []
