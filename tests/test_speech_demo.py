"""The Gradio speech demo (demos/speech_app.py) on a tiny random TTS model and the shipped codec:
gradio_client calls every endpoint, and a real browser (Debian's chromium through Playwright)
runs TTS and sees the audio player appear with a non-silent file behind it. The screenshot is saved with the test's
temp files."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from test_image_demo import free_port
from test_tts import make_tts_checkpoint

pytest.importorskip("gradio")
pytest.importorskip("pocketsphinx")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
SAMPLE = ROOT / "demos" / "samples" / "speech_en.flac"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "demos"))
    import speech_app

    torch.set_num_threads(1)
    app = speech_app.build_app(make_tts_checkpoint(tmp_path_factory.mktemp("speech_demo")))
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from mmar.audio import read_mono

    p = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(p, read_mono(SAMPLE, 16000)[0][:48000], 16000)
    return p


def _audio(result) -> np.ndarray:
    path = result if isinstance(result, str) else result.get("path") or result.get("value")
    return sf.read(path, dtype="float32")[0]


@pytest.mark.slow
def test_every_endpoint_through_gradio_client(server, clip):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    audio, said = client.predict("Hello there.", None, "", 1, 1, api_name="/tts")
    assert np.abs(_audio(audio)).max() > 0 and said
    audio, said = client.predict("Good morning.", handle_file(str(clip)), "", 0, 1, api_name="/tts")
    assert len(_audio(audio)) > 0 and said
    original, new = client.predict(handle_file(str(clip)), api_name="/recognise")
    assert original == new and len(original.split()) >= 3
    edited, note = client.predict(handle_file(str(clip)), original, " ".join(original.split()[:-1] + ["water"]), 0,
                                  api_name="/edit")
    assert len(_audio(edited)) > 0 and "regenerated" in note
    decoded, size = client.predict(handle_file(str(clip)), 1.5, api_name="/codec")
    assert len(_audio(decoded)) > 40000 and "kbps" in size
    with pytest.raises(Exception, match="same words"):
        client.predict(handle_file(str(clip)), original, original, 0, api_name="/edit")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_browser_speaks(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(server)
        page.get_by_label("text").first.fill("Hello world.")
        page.get_by_role("button", name="Speak").click()
        link = page.locator("#tts_out a[data-testid=download-link]")  # Gradio's player: a waveform + this link to the file
        link.wait_for(state="attached", timeout=90_000)
        page.locator("#tts_out [data-testid^=waveform]").first.wait_for(state="visible", timeout=30_000)
        src = link.get_attribute("href")
        page.screenshot(path=str(tmp_path / "speech_demo.png"), full_page=True)
        browser.close()
    assert src
    import urllib.request

    url = src if src.startswith("http") else server.rstrip("/") + "/" + src.lstrip("/")
    data = tmp_path / "out.wav"
    data.write_bytes(urllib.request.urlopen(url).read())
    assert np.abs(sf.read(data, dtype="float32")[0]).max() > 0.01  # non-silent
