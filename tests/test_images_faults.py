"""A slot is done only after its image is checked: orders run through ``pipeline.generate``
against a simulator that sends images that do not decode, are cut short, have the wrong size,
or whose download is cut off. Such an image is never kept as a finished one."""

from __future__ import annotations

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


@pytest.mark.xfail(
    strict=True,
    reason="bug: a slot retried after a bad image is sent with the identical graph; ComfyUI "
    "answers an identical graph from its cache, SaveImage included, with the same file "
    "(recording 13), so the retry gets the same bad image and can never succeed",
)
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
    # The kept image is the second execution's, byte for byte in its pixels.
    (second,) = (tmp_path / "comfy-out" / "comfyline" / "bad-once").glob("img_00002_.png")
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
