"""Disguised variants of written messages, for training only.

Each transform rewrites a message the way an evader would: full-width
letters, half-width kana, letters spaced or split by symbols, emoji or
zero-width characters, contact tools spelled as kana readings, IDs broken
over lines. They add variety to what people wrote; they write nothing new.
"""

import random
import re
import unicodedata

__all__ = ["TRANSFORMS", "augment"]

_ASCII_WORD = re.compile(r"[A-Za-z0-9@._-]{3,}")
_READINGS = {
    "LINE": ["らいん", "ライン", "ﾗｲﾝ", "えるあいえぬいー", "L1NE", "Ｌ－Ｉ－Ｎ－Ｅ"],
    "line": ["らいん", "ライン", "L1NE"],
    "Gmail": ["じーめーる", "ジーメール"],
    "gmail": ["じーめーる", "gmai1"],
    "Chatwork": ["ちゃっとわーく", "チャトワ"],
    "チャットワーク": ["ちゃっとわーく", "chat work"],
    "Discord": ["でぃすこーど", "ディスコード"],
    "Telegram": ["てれぐらむ"],
    "Zoom": ["ずーむ", "ズーム"],
    "@": ["あっと", " at ", "＠", "(at)"],
    ".com": ["どっとこむ", " dot com", "．com"],
}
_SEPARATORS = [" ", ".", "・", "-", "🌟", "✨", "*", "_", "/", "💚"]
_ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


def full_width(text, rng):
    """ASCII letters and digits to their full-width forms."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def half_width_kana(text, rng):
    """Katakana to half-width katakana (the reverse of NFKC)."""
    table = _half_width_table()
    return "".join(table.get(c, c) for c in text)


def _half_width_table():
    if not _HALF:
        for code in range(0xFF61, 0xFFA0):
            c = chr(code)
            _HALF.setdefault(unicodedata.normalize("NFKC", c), c)
        for c in "ガギグゲゴザジズゼゾダヂヅデドバビブベボ":
            base = unicodedata.normalize("NFD", c)[0]
            _HALF[c] = _HALF.get(base, base) + "ﾞ"
        for c in "パピプペポ":
            base = unicodedata.normalize("NFD", c)[0]
            _HALF[c] = _HALF.get(base, base) + "ﾟ"
    return _HALF


_HALF = {}


def _each_ascii_word(text, rng, rewrite):
    return _ASCII_WORD.sub(lambda m: rewrite(m.group()) if rng.random() < 0.7 else m.group(), text)


def spaced_letters(text, rng):
    """Letters of ASCII words split by one separator: L I N E, a.b.c."""
    sep = rng.choice(_SEPARATORS)
    return _each_ascii_word(text, rng, lambda w: sep.join(w))


def zero_width(text, rng):
    """Zero-width characters inside ASCII words and some Japanese words."""
    zw = rng.choice(_ZERO_WIDTH)
    text = _each_ascii_word(text, rng, lambda w: zw.join(w))
    return "".join(c + zw if rng.random() < 0.08 else c for c in text)


def readings(text, rng):
    """Contact tools and e-mail symbols written as kana readings or look-alikes."""
    for word, forms in _READINGS.items():
        if word in text:
            text = text.replace(word, rng.choice(forms))
    return text


def broken_ids(text, rng):
    """Handles and numbers broken over lines or with spaces inside."""
    def split(w):
        cut = rng.randrange(1, len(w))
        return w[:cut] + rng.choice(["\n", " ", "\n\n", " / "]) + w[cut:]

    return _each_ascii_word(text, rng, split)


TRANSFORMS = {f.__name__: f for f in (full_width, half_width_kana, spaced_letters, zero_width, readings, broken_ids)}


def augment(texts, *, seed=0, rate=0.5):
    """Disguised variants of some of ``texts``.

    Parameters
    ----------
    texts : list of str
    seed : int
    rate : float
        Share of texts that get one variant.

    Returns
    -------
    list of (index, transform names, new text)
        Only variants that differ from their original.
    """
    rng = random.Random(seed)
    out = []
    names = sorted(TRANSFORMS)
    for i, text in enumerate(texts):
        if rng.random() >= rate:
            continue
        chosen = rng.sample(names, rng.choice([1, 1, 2]))
        new = text
        for name in chosen:
            new = TRANSFORMS[name](new, rng)
        if new != text:
            out.append((i, chosen, new))
    return out
