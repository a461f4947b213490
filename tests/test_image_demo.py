"""The Gradio image demo (demos/image_app.py) on tiny random checkpoints: gradio_client calls
every endpoint, and a real browser (Debian's chromium through Playwright) generates an image
from a caption and sees it appear. The screenshot is saved next to the test's temp files."""

import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_image_ar import make_checkpoints

pytest.importorskip("gradio")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "demos"))
    import image_app

    torch.set_num_threads(1)
    ar, vq = make_checkpoints(tmp_path_factory.mktemp("demo_ckpt"))
    app = image_app.build_app(ar, vq)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.mark.slow
def test_every_endpoint_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    gallery = client.predict("fox face", 1.5, 1.0, 50, 3, 2, api_name="/generate")
    assert len(gallery) == 2
    for item in gallery:
        assert Image.open(item["image"]).size == (64, 64)
    src = tmp_path / "in.png"
    Image.new("RGB", (100, 80), (30, 160, 60)).save(src)
    editor = {"background": handle_file(str(src)), "layers": [], "composite": None}
    filled = client.predict(editor, "10,10,60,60", "", 0, api_name="/infill")
    assert Image.open(filled).size == (64, 64)
    stroke = tmp_path / "stroke.png"
    layer = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (40, 30, 60, 50))  # what a brush stroke leaves in its layer
    layer.save(stroke)
    brushed = client.predict({"background": handle_file(str(src)), "layers": [handle_file(str(stroke))], "composite": None},
                             "", "", 0, api_name="/infill")
    assert Image.open(brushed).size == (64, 64)
    with pytest.raises(Exception, match="draw over"):
        client.predict(editor, "", "", 0, api_name="/infill")
    rebuilt = client.predict(handle_file(str(src)), api_name="/reconstruct")
    assert Image.open(rebuilt).size == (64, 64)
    with pytest.raises(Exception, match="outside"):  # a bad box is the same one-line error as on the CLI
        client.predict(editor, "0,0,500,500", "", 0, api_name="/infill")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_browser_generates_an_image(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server)
        page.get_by_label("caption (empty: unconditional)").fill("red apple")
        page.get_by_role("button", name="Generate").click()
        img = page.locator("#samples img").first
        img.wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(tmp_path / "image_demo.png"), full_page=True)
        src = img.get_attribute("src")
        browser.close()
    assert src
    shot = np.asarray(Image.open(tmp_path / "image_demo.png").convert("L"), dtype=np.float32)
    assert shot.std() > 5  # the page shows something besides a blank canvas
