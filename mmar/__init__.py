"""mmar — multimodal autoregressive generation on one causal Transformer.

Package map (importing ``mmar`` loads nothing heavy; submodules import torch on use):

- ``mmar.transformer``  config + presets, CausalTransformer, KVCache (static, per-row positions)
- ``mmar.heads``        codebook embeddings and heads (own vocab sizes), continuous-head slot
- ``mmar.patterns``     SpecialIds, DelayPattern, CausalMasking (+ the VoiceCraft layout)
- ``mmar.generation``   the one decoding loop: steppers (cached / reference), sampling, CFG, stop rules
- ``mmar.tokenizers``   tokenizer interface + registry; the causal RVQ speech codec, EnCodec
- ``mmar.coding``       the ``.mmc`` container, bit packing, LM range coding
- ``mmar.tasks``        public task APIs (``mmar.tasks.codec``: files in, files out)
- ``mmar.data``         speech corpus builder and audio-folder loaders
- ``mmar.eval``         PESQ-WB, STOI, SI-SDR; Codec2/Opus baselines
- ``mmar.bench``        benchmarks behind ``mmar bench``
- ``mmar.cli``          the ``mmar`` command
"""

__version__ = "0.1.0"
