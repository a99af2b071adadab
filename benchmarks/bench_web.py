"""Benchmark: the dashboard with a big order, measured in Chromium (Playwright).

1. **A 5,000-image order page.** An order of ``--images`` images (64x64, preview) is made on
   the simulator through the real pipeline; then Chromium opens its order page and its review
   page (cold: a new browser context each time, thumbnails made on first request) and reports
   the Navigation Timing figures: ``domInteractive`` (the page answers input),
   ``domContentLoaded`` (the scripts ran and the live stream is opened) and ``load``.
2. **The event stream at 20 images a second.** An order of ``--stream-images`` is run from the
   page on a simulator paced to about 20 images a second, while the page is open; the page
   records when each thumbnail appears, and each one's delay is compared with the moment the
   ledger marked it done.

    python benchmarks/bench_web.py                    # the figures in docs/BENCHMARKS.md
    python benchmarks/bench_web.py --images 500       # quicker
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from playwright.sync_api import Browser, sync_playwright  # noqa: E402

from comfyline.ledger import LedgerReader, ledger_path  # noqa: E402
from comfyline.sim import SimConfig, running_simulator  # noqa: E402
from comfyline.web import WebConfig  # noqa: E402
from test_pipeline_support import COLD_ROOM, output_folder, run_in_process, settings_for  # noqa: E402
from web_support import WIDE, in_thread, serving  # noqa: E402

ORDER = """type: single
quality: preview
count: {count}
prompt: a small test image
overrides: {{width: 64, height: 64, steps: 1}}
seed: {{mode: fixed, base: 1}}
qc: {{duplicate_distance: null}}
"""

TIMING = """(() => { const t = performance.getEntriesByType('navigation')[0];
  return {interactive: t.domInteractive, content_loaded: t.domContentLoadedEventEnd,
          load: t.loadEventEnd, bytes: t.transferSize}; })()"""


def write(orders: Path, order_id: str, count: int, batch: int = 1) -> Path:
    folder = orders / order_id
    folder.mkdir(parents=True)
    body = ORDER.format(count=count).replace("steps: 1}", f"steps: 1, batch_size: {batch}}}")
    (folder / "project.yaml").write_text(f"id: {order_id}\n" + body)
    return folder / "project.yaml"


def page_timing(browser: Browser, url: str) -> dict[str, Any]:
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    started = time.perf_counter()
    page.goto(url, wait_until="load")
    wall = time.perf_counter() - started
    timing: dict[str, Any] = page.evaluate(TIMING)
    timing["wall_to_load_ms"] = wall * 1000
    timing["thumbs_in_dom"] = page.evaluate("document.querySelectorAll('img').length")
    context.close()
    return timing


def big_order(browser: Browser, tmp: Path, images: int) -> None:
    orders = tmp / "orders"
    order_file = write(orders, "big", images)
    with running_simulator(SimConfig(output_dir=tmp / "comfy", thermal=COLD_ROOM)) as sim:
        settings = settings_for(sim.url, tmp / "out")
        started = time.perf_counter()
        in_thread(run_in_process, order_file, settings)
        print(f"made {images} images in {time.perf_counter() - started:.0f} s")
    with serving(WebConfig(orders, settings)) as base:
        for name, path in (("order page", "/o/big"), ("review page", "/o/big/review")):
            for run in ("cold", "warm"):
                t = page_timing(browser, base + path)
                print(
                    f"{name} ({run}): interactive {t['interactive']:.0f} ms, "
                    f"DOMContentLoaded {t['content_loaded']:.0f} ms, load {t['load']:.0f} ms, "
                    f"{t['bytes'] / 1024:.0f} KiB, {t['thumbs_in_dom']} <img> in the page"
                )


WATCH = """(() => { window.seen = {};
  new MutationObserver((changes) => { const now = Date.now() / 1000;
    for (const c of changes) for (const n of c.addedNodes)
      if (n.dataset && n.dataset.index !== undefined && !(n.dataset.index in window.seen))
        window.seen[n.dataset.index] = now; })
  .observe(document.getElementById('thumbs'), {childList: true}); })()"""


def stream_rate(browser: Browser, tmp: Path, images: int) -> None:
    orders = tmp / "orders-stream"
    # Four images a prompt: more than 20 images a second even on a busy 2-core machine.
    order_file = write(orders, "stream", images, batch=4)
    config = SimConfig(output_dir=tmp / "comfy2", thermal=COLD_ROOM)
    with running_simulator(config) as sim:
        settings = settings_for(sim.url, tmp / "out2")
        with serving(WebConfig(orders, settings)) as base:
            page = browser.new_page(viewport=WIDE)
            page.goto(f"{base}/o/stream")
            page.click("button[data-action=start]")
            page.wait_for_url(f"{base}/o/stream")
            page.evaluate(WATCH)
            page.wait_for_function(
                "document.getElementById('order-state').textContent === 'completed'",
                timeout=600_000,
            )
            page.wait_for_timeout(1000)  # the last batch of thumbnails
            seen: dict[str, float] = page.evaluate("window.seen")
            page.close()
    with LedgerReader.open(ledger_path(output_folder(order_file, tmp / "out2"))) as view:
        done = {e.index: e.at for _, e in view.events(limit=10 * images) if e.kind == "done"}
    lags = sorted(seen[str(i)] - at for i, at in done.items() if str(i) in seen)
    span = max(done.values()) - min(done.values())
    rate = (len(done) - 1) * 4 / span
    print(
        f"stream: {len(done) * 4} images ({len(done)} prompts of 4) done in {span:.1f} s "
        f"({rate:.1f} images/s); "
        f"{len(seen)} prompts' thumbnails appeared live; "
        f"delay after the ledger: median {statistics.median(lags) * 1000:.0f} ms, "
        f"p95 {lags[int(0.95 * (len(lags) - 1))] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--stream-images", type=int, default=400)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no Chromium: apt-get install chromium")
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            big_order(browser, tmp, args.images)
            stream_rate(browser, tmp, args.stream_images)
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
