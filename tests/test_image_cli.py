"""``mmar image generate | infill | reconstruct | info`` on tiny random checkpoints, and bad inputs."""

import json

import pytest
from PIL import Image

from mmar.cli import main
from test_image_ar import make_checkpoints


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("cli_ckpt"))


@pytest.fixture
def run(ckpts, capsys):
    ar, vq = ckpts

    def call(*argv, models="both"):
        extra = (["--checkpoint", str(ar)] if models == "both" else []) + (["--tokenizer-checkpoint", str(vq)] if models else [])
        code = main([*map(str, argv), *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def rgba_png(tmp_path):
    p = tmp_path / "in.png"
    img = Image.new("RGBA", (120, 90), (0, 0, 0, 0))
    img.paste((200, 40, 40, 255), (30, 20, 90, 70))
    img.save(p)
    return p


def size(path):
    with Image.open(path) as im:
        return im.size, im.mode


def test_generate_one_and_a_grid(run, tmp_path):
    code, out, err = run("image", "generate", "--caption", "fox zebra", "-o", tmp_path / "a.png", "--seed", "3", "--cfg", "2")
    assert code == 0, err
    assert size(tmp_path / "a.png") == ((64, 64), "RGB") and "zebra" in out  # the unknown word is reported
    code, _, err = run("image", "generate", "--caption", "", "--num", "5", "-o", tmp_path / "g.png", "--top-k", "0", "--temperature", "0.7")
    assert code == 0, err
    assert size(tmp_path / "g.png") == ((192, 128), "RGB")  # 3 per row, 2 rows
    again = tmp_path / "b.png"
    assert run("image", "generate", "--caption", "fox zebra", "-o", again, "--seed", "3", "--cfg", "2")[0] == 0
    assert again.read_bytes() == (tmp_path / "a.png").read_bytes()  # seeded


def test_infill_reconstruct_info(run, rgba_png, tmp_path):
    code, out, err = run("image", "infill", rgba_png, "--box", "40,30,80,60", "-o", tmp_path / "i.png", "--caption", "fox")
    assert code == 0, err
    assert size(tmp_path / "i.png") == ((64, 64), "RGB") and "regenerated" in out
    mask = tmp_path / "mask.png"
    m = Image.new("L", (120, 90), 0)
    m.paste(255, (50, 40, 70, 50))  # a brushed patch
    m.save(mask)
    code, out, err = run("image", "infill", rgba_png, "--mask", mask, "-o", tmp_path / "m.png")
    assert code == 0, err
    assert size(tmp_path / "m.png") == ((64, 64), "RGB") and "masked token cells" in out
    Image.new("L", (60, 60), 255).save(tmp_path / "small.png")
    assert "must match" in one_error(run("image", "infill", rgba_png, "--mask", tmp_path / "small.png", "-o", tmp_path / "x.png"))
    Image.new("L", (120, 90), 0).save(tmp_path / "empty.png")
    assert "covers nothing" in one_error(run("image", "infill", rgba_png, "--mask", tmp_path / "empty.png", "-o", tmp_path / "x.png"))
    assert "not allowed" in one_error(run("image", "infill", rgba_png, "--mask", mask, "--box", "1,1,5,5", "-o", tmp_path / "x.png"))
    code, out, err = run("image", "reconstruct", rgba_png, "-o", tmp_path / "r.png", models="tok")
    assert code == 0, err
    assert size(tmp_path / "r.png") == ((64, 64), "RGB") and "PSNR" in out
    code, out, err = run("image", "info", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["grid"] == "8x8" and info["codes"] == 64 and info["bits_per_image"] == 64 * 6
    assert info["model_parameters"] > 0 and info["tokenizer_parameters"] > 0 and info["max_spans"] == 8


def test_grey_palette_and_large_inputs_are_accepted(run, tmp_path):
    for mode, sz in (("L", (300, 40)), ("P", (33, 65)), ("LA", (64, 64)), ("1", (10, 10))):
        p = tmp_path / f"x_{mode}.png"
        Image.new(mode, sz).save(p)
        code, _, err = run("image", "reconstruct", p, "-o", tmp_path / f"o_{mode}.png", models="tok")
        assert code == 0, (mode, err)
        assert size(tmp_path / f"o_{mode}.png")[0] == (64, 64)


def one_error(result):
    code, out, err = result
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_inputs_give_one_error_line(run, rgba_png, tmp_path, monkeypatch):
    out = tmp_path / "o.png"
    one_error(run("image", "reconstruct", tmp_path / "missing.png", "-o", out, models="tok"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all" * 10)
    one_error(run("image", "reconstruct", junk, "-o", out, models="tok"))
    one_error(run("image", "infill", junk, "--box", "0,0,8,8", "-o", out))
    for box in ("0,0,200,10", "10,10,10,20", "-1,0,5,5", "1,2,3", "a,b,c,d", "0,0,10,10"):  # 0..10 of 120 wide: outside the centre crop
        assert "box" in one_error(run("image", "infill", rgba_png, "--box", box, "-o", out))
    for limit in (1000, 6000):  # 120×90 pixels: over 2× the limit (Pillow's error), over 1× (its warning)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        assert "too large" in one_error(run("image", "reconstruct", rgba_png, "-o", out, models="tok"))
    monkeypatch.undo()
    existing = tmp_path / "exists.png"
    existing.write_bytes(b"keep")
    assert "-f" in one_error(run("image", "generate", "--caption", "fox", "-o", existing))
    assert existing.read_bytes() == b"keep"
    assert run("image", "generate", "--caption", "fox", "-o", existing, "-f")[0] == 0 and size(existing)[0] == (64, 64)
    one_error(run("image", "generate", "--caption", "!!!", "-o", out))
    one_error(run("image", "generate", "--caption", "a b c d e f g h i j", "-o", out))  # longer than the model reads
    one_error(run("image", "generate", "--caption", "fox", "--num", "0", "-o", out))
    one_error(run("image", "generate", "--caption", "fox", "-o", out, "--checkpoint", tmp_path / "nowhere", models="tok"))
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_missing_default_checkpoints_fail_with_one_line(tmp_path, monkeypatch, capsys):
    """Nothing on the search path (no $MMAR_CHECKPOINTS entry, no shipped copy): one error line."""
    monkeypatch.setenv("MMAR_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr("mmar.checkpoint.files", lambda package: tmp_path / "package")
    assert main(["image", "generate", "--caption", "fox", "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint 'image-vq-64' not found") and err.count("\n") == 1
