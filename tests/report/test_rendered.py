"""The reports rendered in a real headless browser: Chromium from the system packages, driven by
Playwright (never a browser download). Every image loads, nothing is logged as a console error,
and the page fits a 1280-pixel window without horizontal scrolling.

Skipped when the playwright package or a Chromium binary is missing. With $RECSTACK_SCREENSHOTS
set, a full-page PNG of each page is saved there (``make screenshots`` fills docs/images/ from
real MovieLens runs with it); with $RECSTACK_REPORT_RUNS set (folders separated by ``:``), those
run folders are rendered instead of the synthetic ones.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from recstack.experiment.report import write_comparison

playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM = next((p for p in (os.environ.get("RECSTACK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).exists()), None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1280

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")


def save_small_png(png: bytes, target: Path) -> None:
    """The screenshot as a palette PNG (256 colours: the pages are flat colours and charts, so
    it looks the same at a fraction of the size), or as taken when Pillow is missing."""
    try:
        import io

        from PIL import Image
    except ImportError:
        target.write_bytes(png)
        return
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def pages(report_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    chosen = os.environ.get("RECSTACK_REPORT_RUNS")
    runs = [Path(p) for p in chosen.split(":")] if chosen else list(report_runs.values())
    out = [(run.name, run / "report.html") for run in runs]
    folder = runs[0].parent if chosen else tmp_path_factory.mktemp("comparison")
    comparison, _ = write_comparison(runs, folder / "comparison.html")
    return [*out, ("comparison", comparison)]


def test_reports_render_with_every_image_loaded_and_no_horizontal_scroll(browser, report_runs, tmp_path_factory):
    shots = os.environ.get("RECSTACK_SCREENSHOTS")
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    for name, path in pages(report_runs, tmp_path_factory):
        requests.clear()
        assert path.exists(), path
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        assert images and all(ok for _, ok in images), (name, images)
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= WIDTH, (name, width)
        # the page is one file: nothing but itself (and its data: images) is requested
        assert all(url.startswith(("file:", "data:")) for url in requests), (name, requests)
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            target = Path(shots) / f"report-{name.rsplit('-', 2)[0] if '-20' in name else name}.png"
            save_small_png(page.screenshot(full_page=True), target)
    assert errors == []
    page.close()
