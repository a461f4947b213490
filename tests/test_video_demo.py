"""The Gradio video demo (demos/video_app.py) on tiny random checkpoints: gradio_client calls the
endpoint (with and without prompt frames), and a real browser (Debian's chromium through
Playwright) generates a clip and finds a playable video element. The screenshot is saved next to
the test's temp files."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmar.checkpoint import inference_state, save_pretrained
from mmar.tasks import video as tv
from mmar.tasks.image_latent import load_image_vae
from mmar.text.captions import CaptionVocab
from mmar.video_io import read_frames, write_video
from test_image_demo import free_port
from test_image_latent import make_latent_checkpoints

pytest.importorskip("gradio")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "demos"))
    import video_app

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("video_ckpt")
    _, vae = make_latent_checkpoints(root)
    config = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32}, CaptionVocab.build(["fox moves left"], 6),
                              4, (8, 8), 4, load_image_vae(vae), "video-tiny")
    torch.manual_seed(0)
    save_pretrained(inference_state(tv.from_config(config).model), config, root / "video")
    app = video_app.build_app(root / "video", vae)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.mark.slow
def test_endpoint_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    out = client.predict("fox moves left", None, 3, 2, 1.5, 0, api_name="/generate")
    path = out["video"] if isinstance(out, dict) else out
    assert read_frames(Path(path)).shape == (3, 64, 64, 3)
    frames = np.full((2, 40, 40, 3), 255, np.uint8)
    frames[1, 10:20, 10:20] = 0
    prompt = write_video(tmp_path / "p.gif", frames)
    out = client.predict("fox moves left", handle_file(str(prompt)), 2, 1, 1.0, 1, api_name="/generate")
    path = out["video"] if isinstance(out, dict) else out
    assert read_frames(Path(path)).shape == (4, 64, 64, 3)  # 2 prompt frames + 2 new
    (tmp_path / "bad.gif").write_bytes(b"GIF89a broken")
    with pytest.raises(Exception, match="cannot read"):
        client.predict("fox", handle_file(str(tmp_path / "bad.gif")), 2, 1, 1.0, 0, api_name="/generate")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_browser_shows_a_playable_video(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server)
        page.get_by_label("caption (empty: unconditional)").fill("fox moves left")
        page.get_by_role("button", name="Generate").click()
        video = page.locator("#clip video").first
        video.wait_for(state="attached", timeout=90_000)
        page.wait_for_function("() => { const v = document.querySelector('#clip video'); return v && v.readyState >= 2 && v.duration > 0; }",
                               timeout=60_000)
        duration = page.evaluate("() => document.querySelector('#clip video').duration")
        page.screenshot(path=str(tmp_path / "video_demo.png"), full_page=True)
        browser.close()
    assert duration > 0
