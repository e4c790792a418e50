"""`hf-transfer demo` in a real browser: Debian's chromium, headless, driven by playwright. The page answers a typed
sentence and an uploaded image as `predict` does, and shows the test metrics with their intervals.

Set DEMO_SCREENSHOTS_DIR=docs to refresh the README's screenshots (docs/demo_text.png, docs/demo_image.png)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from hf_transfer.evaluation.inference import load_trained, predict

pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[app]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install "
                                                               "playwright (it drives Debian's chromium)")
# Debian's /usr/bin/chromium is a shell wrapper; playwright wants the binary itself.
CHROMIUM = next((path for path in ("/usr/lib/chromium/chromium", shutil.which("chromium"),
                                   shutil.which("chromium-browser")) if path and Path(path).is_file()), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium to drive: apt-get install chromium")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(output_dir: Path):
    """`hf-transfer demo OUTPUT` in a subprocess on a free port; yields its URL once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from hf_transfer.cli import main; main()", "demo",
                               str(output_dir), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    pytest.fail(f"hf-transfer demo did not start:\n{server.communicate()[0][-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("DEMO_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name))


def answer_rows(page) -> tuple[str, dict[str, str]]:
    """(the headline label, {class: score as shown}) read from the answer table."""
    answer = page.locator("#answer")
    answer.locator("table").wait_for(timeout=60_000)
    label = answer.locator("strong").first.inner_text()
    rows = answer.locator("tbody tr").all()
    return label, {cells[0]: cells[1] for cells in (row.locator("td").all_inner_texts() for row in rows)}


def expected(output_dir: Path, value: str) -> tuple[str, dict[str, str]]:
    model, processor, settings = load_trained(output_dir)
    [prediction] = predict(model, processor, settings, [value])
    return prediction["label"], {label: f"{score:.4f}" for label, score in prediction["scores"].items()}


def check_metrics_panel(page, output_dir: Path) -> None:
    panel = page.locator("#metrics").inner_text()
    results = json.loads((output_dir / "all_results.json").read_text())
    assert "95% interval" in panel
    assert (f"{results['test_accuracy']:.4f}\t[{results['test_accuracy_ci_low']:.4f}, "
            f"{results['test_accuracy_ci_high']:.4f}]") in panel


def test_a_typed_sentence_gets_predicts_answer_beside_the_intervals(browser, demo_text_run, tmp_path):
    sentence = "the hotel was lovely and superb"
    with served(demo_text_run) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.get_by_label("Text").fill(sentence)
        page.get_by_role("button", name="Predict").click()

        assert answer_rows(page) == expected(demo_text_run, sentence)
        check_metrics_panel(page, demo_text_run)
        screenshot(page, tmp_path, "demo_text.png")

        page.get_by_label("Text").fill("   ")
        page.get_by_role("button", name="Predict").click()
        page.locator("#note", has_text="Type a text first").wait_for(timeout=30_000)
        assert page.locator("#answer").inner_text().strip() == ""


def test_an_uploaded_image_gets_predicts_answer_and_a_broken_one_a_message(browser, demo_image_run, images, tmp_path):
    image = images / "val" / "red" / "0.png"
    with served(demo_image_run) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(image))
        page.get_by_role("button", name="Predict").click()

        assert answer_rows(page) == expected(demo_image_run, str(image))
        check_metrics_panel(page, demo_image_run)
        screenshot(page, tmp_path, "demo_image.png")

        broken = tmp_path / "holiday.png"
        broken.write_text("not an image")
        page.locator("input[type=file]").first.set_input_files(str(broken))
        page.get_by_role("button", name="Predict").click()
        page.locator("#note", has_text="That image can't be used: can't read image holiday.png").wait_for(
            timeout=30_000)
