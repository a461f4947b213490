"""English text normalisation for speech: what a reader says, in words, before phonemisation.

:func:`normalize` expands what espeak-ng reads badly or not at all: numbers (cardinals up to
10^15, decimals, ordinals), money ("$3.50" → "three dollars fifty cents"; espeak-ng reads
"dollar three point five zero"), percentages, common abbreviations ("Mr." → "mister") and
symbols ("&" → "and"). :func:`split_sentences` cuts long text into sentences of bounded length
for synthesis one sentence at a time.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand")]
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_TITLES = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint", "prof": "professor"}  # before a name
_ABBREVIATIONS = {"jr": "junior", "sr": "senior", "vs": "versus", "etc": "et cetera", "approx": "approximately"}  # with a period
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence")}
MAX_NUMBER = 10**15 - 1


def number_words(n: int) -> str:
    """0 ≤ n ≤ 10^15 − 1 → English words, e.g. 1205 → "one thousand two hundred five"."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in _SCALES:
        if n >= size:
            rest = n % size
            return number_words(n // size) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """1 → "first", 22 → "twenty second", 100 → "one hundredth"."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL:
        words[-1] = _ORDINAL[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def _cardinal(token: str) -> str:
    """An integer string (maybe with thousands commas) → words; too long: digit by digit."""
    digits = token.replace(",", "")
    return number_words(int(digits)) if len(digits) <= 15 else _digits(digits)


def _money(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole, cents = m.group(2), m.group(3)
    w = int(whole.replace(",", "")) if len(whole.replace(",", "")) <= 15 else None
    out = f"{_cardinal(whole)} {one if w == 1 else many}"
    if cents and int(cents):
        c = int(cents.ljust(2, "0")[:2])
        out += f" {number_words(c)} {sub_one if c == 1 else sub_many}"
    return f" {out} "


def normalize(text: str) -> str:
    """Text → what a reader says, numbers and abbreviations in words, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"([$€£])\s?(\d[\d,]*)(?:\.(\d+))?", _money, text)
    text = re.sub(r"(\d[\d,]*(?:\.\d+)?)\s?%", r"\1 percent", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: " " + ordinal_words(int(m.group(1))) + " " if len(m.group(1)) <= 15 else m.group(0), text)
    text = re.sub(r"\b(\d[\d,]*)\.(\d+)\b", lambda m: f" {_cardinal(m.group(1))} point {_digits(m.group(2))} ", text)
    text = re.sub(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b", lambda m: f" {_cardinal(m.group(0))} ", text)
    text = re.sub(r"\b(Mr|Mrs|Ms|Dr|St|Prof)\.?(?=\s+[A-Z])", lambda m: _TITLES[m.group(1).lower()], text)
    text = re.sub(r"\b([A-Za-z]+)\.", lambda m: _ABBREVIATIONS.get(m.group(1).lower(), m.group(0)), text)
    text = text.replace("&", " and ").replace("+", " plus ").replace("@", " at ")
    return re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip()


def split_sentences(text: str, max_chars: int = 200) -> list[str]:
    """Sentences of at most ``max_chars`` characters: a longer sentence is cut after commas
    (as few cuts as fit), and a clause still too long between words."""
    out = []
    for sentence in re.split(r"(?<=[.!?;])\s+", text.strip()):
        current = ""
        for clause in re.split(r"(?<=,)\s+", sentence):
            while len(clause) > max_chars:
                cut = clause.rfind(" ", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                out += [current] if current else []
                current = ""
                out.append(clause[:cut].strip())
                clause = clause[cut:].strip()
            if current and len(current) + 1 + len(clause) > max_chars:
                out.append(current)
                current = ""
            current = f"{current} {clause}".strip()
        if current:
            out.append(current)
    return out
