"""Text front ends: caption word tokenizers (:mod:`mmar.text.captions`); phonemes, normalisation
and alignment belong here too."""
