"""mmar — multimodal autoregressive generation on one causal Transformer.

Package map (importing ``mmar`` loads nothing heavy; submodules import torch on use):

- ``mmar.transformer``  config + presets, CausalTransformer, frame-level KVCache
- ``mmar.patterns``     DelayPattern, CausalMasking, SpecialIds
- ``mmar.generation``   prefill / decode_one_frame / decode_n_frames, sampling, CFG
- ``mmar.tokenizers``   tokenizer interface; the causal RVQ speech codec
- ``mmar.coding``       the ``.mmc`` container and bit packing
- ``mmar.tasks``        public task APIs (``mmar.tasks.codec``: files in, files out)
- ``mmar.data``         speech corpus builder and audio-folder loaders
- ``mmar.eval``         PESQ-WB, STOI, SI-SDR; Codec2/Opus baselines
- ``mmar.bench``        benchmarks behind ``mmar bench``
- ``mmar.cli``          the ``mmar`` command
"""

__version__ = "0.1.0"
