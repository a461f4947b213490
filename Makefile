# Two commands do everything on a fresh machine:
#   make demo   set up, then round-trip the bundled real-speech sample through the shipped codec, speak a
#               sentence with the shipped TTS model and edit a word of the sample
#   make test   set up (system packages too, when run as root), then run the whole test suite
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
APT     := ffmpeg sox espeak-ng flite festival festvox-kallpc16k codec2 opus-tools fortunes alsa-utils asterisk-core-sounds-en-g722 asterisk-core-sounds-en asterisk-core-sounds-fr-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-ru-g722 asterisk-core-sounds-it-g722 asterisk-prompt-it-menardi-wav asterisk-prompt-fr-armelle asterisk-prompt-es-co fillets-ng-data-nl fillets-ng-data-cs fonts-noto-color-emoji unicode-data chromium
OUT     ?= runs/demo

.PHONY: demo test setup system-deps data data-tts bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"

setup: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	else echo "not root: install $(APT) yourself for the Codec2/Opus baselines and speech-data tests"; fi

demo: setup
	mkdir -p $(OUT)
	$(BIN)/mmar codec encode demos/samples/speech_en.flac -o $(OUT)/speech_en.mmc --bitrate 1.5 -f
	$(BIN)/mmar codec info $(OUT)/speech_en.mmc
	$(BIN)/mmar codec decode $(OUT)/speech_en.mmc -o $(OUT)/speech_en.decoded.wav -f
	$(BIN)/mmar codec encode demos/samples/speech_en.flac -o $(OUT)/speech_en.lm.mmc --lm -f
	$(BIN)/mmar codec decode $(OUT)/speech_en.lm.mmc -o $(OUT)/speech_en.lm.decoded.wav -f
	$(BIN)/mmar tts --text "This voice was made by one small Transformer, on a laptop." -o $(OUT)/tts.wav -f
	$(BIN)/mmar edit demos/samples/speech_en.flac -o $(OUT)/speech_en.edited.wav -f \
	  --from "Hello world. Weasels have eaten our phone system. They have been carried away by monkeys. Thank you for your patience." \
	  --to "Hello world. Weasels have eaten our phone system. They have been carried away by penguins. Thank you for your patience."
	@echo "listen: $(OUT)/speech_en.decoded.wav (1.5 kbps raw), $(OUT)/speech_en.lm.decoded.wav (LM-coded), $(OUT)/tts.wav (TTS, default voice), $(OUT)/speech_en.edited.wav (edited); original: demos/samples/speech_en.flac"

test: system-deps setup
	$(BIN)/python -m pytest

data: system-deps setup
	$(BIN)/python -m mmar.data.packaged_speech --out data/prep --cache data/cache
	$(BIN)/python -m mmar.data.pack --corpus data/prep --out data/gpu --max-mib 24 --kbps 16
	$(BIN)/python -m mmar.data.clips --out data/bench_clips data/prep/valid/ru_RU_f_IvrvoiceRU data/prep/valid/it_IT_m_Carlo

data-tts: system-deps setup
	$(BIN)/python -m mmar.data.tts_corpus --out data/tts

bench: data
	$(BIN)/mmar bench generate --frames 1000 --codebooks 4 --json runs/bench_generate.json
	$(BIN)/mmar bench codec --clips data/bench_clips --json runs/bench_codec.json --png runs/bench_codec.png
	$(BIN)/mmar bench codec --clips data/prep/test --per-speaker 8 --json runs/bench_codec_test.json --png runs/bench_codec_test.png

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
