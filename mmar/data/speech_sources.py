"""Where the real speech on these machines comes from: one :class:`Source` per speaker folder.

Every source says which package ships it, its licence, its language, how the speaker's sex was
decided and which split it belongs to. Splits are by *person* (Allison reads en and es: one
person, both in train). Decided once, here, and never by a metric:

- train: Asterisk Allison (en, es), June (fr-CA), Menardi (it, female; 8 kHz source), the
  fillets-ng Dutch and Czech voice packs (big fish ``v`` = male, small fish ``m`` = female,
  every other character pooled as ``other``);
- valid: Asterisk ru (IvrvoiceRU, female) and it (Carlo, male): the corpus-v1 valid speakers;
- test: English male reading (LibriVox "Sense and Sensibility" ch. 1, shipped in the
  pocketsphinx 5.1.1 PyPI sdist's tests), more English male (other pocketsphinx test
  utterances: "go forward ten meters", numbers, cards, ...), English female (ALSA's speaker-test
  voice), French female (Armelle Desjardins) and Colombian Spanish female (July E. Jiménez):
  5 speaker folders, both sexes, 3 languages, real speech only. The fr/es test voices are
  8 kHz sources (band-limited: marked in the manifest).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..audio import read_mono
from ..errors import MmarError

SOUNDS = Path("/usr/share/asterisk/sounds")
FILLETS = Path("/usr/share/games/fillets-ng/sound")
ALSA = Path("/usr/share/sounds/alsa")
RATE = 16000

POCKETSPHINX_SDIST = ("pocketsphinx-5.1.1.tar.gz",
                      "https://files.pythonhosted.org/packages/61/e7/13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e428c/pocketsphinx-5.1.1.tar.gz",
                      "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355")
# Test utterances of the pocketsphinx sdist that are real English speech of 1–10 s, not LDC data
# (tidigits) and not the 14 s AN4 regression file.
PS_LIBRIVOX = "test/data/librivox/"
PS_MISC = ("test/data/goforward.raw", "test/data/numbers.raw", "test/data/something.raw",
           "test/data/cards/", "test/data/forever/")


@dataclass(frozen=True)
class Source:
    """One speaker folder ``<split>/<name>/`` and where its audio comes from."""

    name: str
    split: str
    person: str
    language: str
    sex: str  # "female" | "male" | "mixed"
    sex_by: str
    package: str
    licence: str
    root: Path
    pattern: str  # glob under root (recursive with **)
    decoder: str  # "g722" | "gsm" | "file" | "raw16k"
    source_rate: int = RATE
    note: str = ""
    select: tuple[str, ...] = field(default=())  # fillets: character codes kept ("" = all others)

    @property
    def band_limited(self) -> bool:
        return self.source_rate < RATE

    def files(self) -> list[Path]:
        files = sorted(p for p in self.root.glob(self.pattern) if p.is_file())
        if self.name.startswith("fillets_"):
            files = [f for f in files if _fillets_char(f) in self.select or (not self.select[0] and _fillets_char(f) not in ("m", "v"))]
        if self.root == ALSA:
            files = [f for f in files if f.stem != "Noise"]
        return files


def _fillets_char(f: Path) -> str:
    """``let-m-divna.ogg`` → ``m`` (the speaking character)."""
    parts = f.stem.split("-")
    return parts[1] if len(parts) > 2 else ""


CC = "CC-BY-SA-3.0"


def asterisk_sources() -> list[Source]:
    g = dict(decoder="g722", pattern="**/*.g722")
    return [
        Source("en_US_f_Allison", "train", "allison_smith", "en", "female", "package name (_f_); median F0", "asterisk-core-sounds-en-g722", CC, SOUNDS / "en_US_f_Allison", **g),
        Source("es_MX_f_Allison", "train", "allison_smith", "es", "female", "package name (_f_); median F0", "asterisk-core-sounds-es-g722", CC, SOUNDS / "es_MX_f_Allison", **g),
        Source("fr_CA_f_June", "train", "june_wallack", "fr", "female", "package name (_f_); median F0", "asterisk-core-sounds-fr-g722", CC, SOUNDS / "fr_CA_f_June", **g),
        Source("it_IT_f_Menardi", "train", "paola_dal_zot", "it", "female", "package name (_f_), copyright (Paola Dal Zot); median F0", "asterisk-prompt-it-menardi-wav",
               "CC-BY-SA-3.0-IT", SOUNDS / "it_IT_f_Menardi", "**/*.wav", "file", 8000),
        Source("ru_RU_f_IvrvoiceRU", "valid", "ivrvoice_ru", "ru", "female", "package name (_f_); median F0", "asterisk-core-sounds-ru-g722", "CC-BY-3.0", SOUNDS / "ru_RU_f_IvrvoiceRU", **g),
        Source("it_IT_m_Carlo", "valid", "carlo_it", "it", "male", "package name (_m_); median F0 is high for a man (~180 Hz)", "asterisk-core-sounds-it-g722", CC, SOUNDS / "it_IT_m_Carlo", **g),
        Source("fr_FR_f_Armelle", "test", "armelle_desjardins", "fr", "female", "copyright (voice actor Armelle Desjardins); median F0", "asterisk-prompt-fr-armelle",
               "BSD-style (Michel Gutierrez)", SOUNDS / "fr", "**/*.gsm", "gsm", 8000),
        Source("es_CO_f_July", "test", "july_jimenez", "es", "female", "LEEME (voz de July E. Jiménez); median F0", "asterisk-prompt-es-co", "GPL-2",
               SOUNDS / "es", "**/*.gsm", "gsm", 8000),
    ]


def fillets_sources() -> list[Source]:
    out = []
    for lang, pkg in (("nl", "fillets-ng-data-nl"), ("cs", "fillets-ng-data-cs")):
        for char, sex, who in (("m", "female", "small fish"), ("v", "male", "big fish"), ("", "mixed", "all other characters")):
            out.append(Source(f"fillets_{lang}_{char or 'other'}", "train", f"fillets_{lang}_{char or 'other'}", lang, sex,
                              f"{who}: median F0" if char else "several actors pooled", pkg, "GPL-2+", FILLETS, f"*/{lang}/*.ogg", "file", 22050,
                              note=f"acted game dialogue ({who})", select=(char,)))
    return out


def other_sources(cache: Path) -> list[Source]:
    ps = cache / "pocketsphinx-5.1.1"
    return [
        Source("en_m_librivox", "test", "librivox_sense_and_sensibility_reader", "en", "male", "median F0 ~105 Hz", "PyPI pocketsphinx 5.1.1 sdist (test/data/librivox)",
               "public domain (LibriVox); BSD-2-Clause (pocketsphinx)", ps / "test/data/librivox", "*.wav", "file", note="read audiobook, 5 utterances"),
        Source("en_m_pocketsphinx", "test", "pocketsphinx_test_speakers", "en", "male", "median F0 100–140 Hz per file", "PyPI pocketsphinx 5.1.1 sdist (test/data)",
               "BSD-2-Clause (CMU)", ps / "test/data", "[cfgns]*", "file", note="command/number test utterances; speaker(s) unnamed"),
        Source("en_f_alsa", "test", "alsa_speaker_test_voice", "en", "female", "median F0 ~197 Hz", "alsa-utils", "GPL-2+", ALSA, "*.wav", "file", 48000,
               note="channel names (\"Front Left\"...)"),
    ]


def all_sources(cache: Path) -> list[Source]:
    return asterisk_sources() + fillets_sources() + other_sources(cache)


def source_files(src: Source) -> list[Path]:
    if src.name == "en_m_pocketsphinx":
        return sorted(p for m in PS_MISC for p in ([src.root.parent.parent / m] if not m.endswith("/") else (src.root.parent.parent / m).glob("*.wav")) if p.is_file())
    return src.files()


def decode(src: Source, f: Path) -> np.ndarray:
    """One file of ``src`` → float32 [N] mono at 16 kHz."""
    if src.decoder in ("g722", "gsm"):
        r = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", src.decoder, "-i", str(f), "-f", "s16le", "-ac", "1", "-"],
                           capture_output=True)
        if r.returncode:
            raise MmarError(f"cannot decode {f}: {r.stderr.decode(errors='replace').strip()[:200]}")
        x = np.frombuffer(r.stdout, "<i2").astype(np.float32) / 32768
        rate = RATE if src.decoder == "g722" else 8000
        if rate != RATE:
            import soxr

            x = soxr.resample(x, rate, RATE, quality="HQ").astype(np.float32)
        return x
    if f.suffix == ".raw":
        return np.fromfile(f, "<i2").astype(np.float32) / 32768  # pocketsphinx raw: 16 kHz s16le
    return read_mono(f, RATE)[0]


def fetch_sdist(cache: Path, allow_network: bool) -> bool:
    """Make sure the pocketsphinx sdist's test audio is unpacked under ``cache`` (sha256 checked)
    → whether it is there."""
    name, url, sha = POCKETSPHINX_SDIST
    done = cache / "pocketsphinx-5.1.1" / "UNPACKED"
    if done.exists():
        return True
    tgz = cache / name
    if not tgz.exists():
        if not allow_network:
            return False
        print(f"fetching {url}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=120) as r:
                data = r.read()
        except OSError as e:
            print(f"warning: cannot fetch {name} ({e}); the test split will lack real English male speech", file=sys.stderr)
            return False
        if hashlib.sha256(data).hexdigest() != sha:
            raise MmarError(f"{url}: sha256 mismatch")
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write(tgz, lambda p: p.write_bytes(data))
    if hashlib.sha256(tgz.read_bytes()).hexdigest() != sha:
        raise MmarError(f"{tgz}: sha256 mismatch; delete it")
    with tarfile.open(tgz) as t:
        members = [m for m in t.getmembers() if m.isfile() and (m.name.startswith("pocketsphinx-5.1.1/test/data/") or m.name.endswith("/LICENSE"))
                   and ".." not in m.name and not m.name.startswith("/")]
        for m in members:
            dst = cache / m.name
            data = t.extractfile(m).read()
            atomic_write(dst, lambda p, d=data: p.write_bytes(d))
    done.write_text("ok\n")
    return True


def wav_bytes(x: np.ndarray) -> bytes:
    import soundfile as sf

    b = io.BytesIO()
    sf.write(b, np.clip(x, -1, 1), RATE, format="WAV", subtype="PCM_16")
    return b.getvalue()
