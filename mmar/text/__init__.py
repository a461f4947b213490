"""Text front ends: caption word tokenizers (:mod:`mmar.text.captions`), English normalisation
(:mod:`mmar.text.normalize`) and espeak-ng phonemes with their vocabulary
(:mod:`mmar.text.phonemes`). Word alignment (pocketsphinx) belongs here too."""
