"""Japanese tokenisation with fugashi and unidic-lite, safe for any input.

MeCab is fed normalised text only (no NUL, no surrogates), in bounded
pieces: its time grows with the square of a run of one character class and
long single inputs crash the process, so a message is cut at sentence and
line ends, and runs longer than ``max_piece`` are hard-split. Disguises that
straddle a cut are already undone by normalisation, which sees the whole text.
"""

import os
import re
import threading
from typing import NamedTuple

from .normalize import split_placeholders

__all__ = ["Token", "Tokenizer"]

_SENTENCE_END = re.compile(r"[。！？!?\n]")


class Token(NamedTuple):
    """A token of normalised text: its feature string and its span there."""

    surface: str
    lemma: str
    start: int
    end: int


def _pieces(text, start, end, max_piece):
    """Cut ``text[start:end]`` into spans of at most ``max_piece`` characters."""
    while end - start > max_piece:
        limit = start + max_piece
        cut = None
        for m in _SENTENCE_END.finditer(text, start + max_piece // 2, limit):
            cut = m.end()
        yield start, cut or limit
        start = cut or limit
    if end > start:
        yield start, end


class Tokenizer:
    """Callable tokenizer: normalised text in, feature strings out.

    Parameters
    ----------
    max_piece : int
        Longest text handed to MeCab at once.

    Notes
    -----
    A fugashi ``Tagger`` neither pickles nor releases the GIL, so each thread
    of each process builds its own, lazily; the tokenizer pickles as its
    settings only.
    """

    def __init__(self, *, max_piece=1000):
        self.max_piece = max_piece
        self._local = threading.local()

    def __reduce__(self):
        return (_make_tokenizer, (self.max_piece,))

    def _tagger(self):
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            import fugashi

            local.tagger = fugashi.Tagger()
            local.pid = os.getpid()
        return local.tagger

    def tokens(self, text):
        """Tokens of a normalised text, with their offsets in it.

        A placeholder such as ``<email>`` is one token.
        """
        tagger = self._tagger()
        out = []
        for a, b, is_placeholder in split_placeholders(text):
            if is_placeholder:
                out.append(Token(text[a:b], text[a:b], a, b))
                continue
            for pa, pb in _pieces(text, a, b, self.max_piece):
                pos = pa
                for word in tagger(text[pa:pb]):
                    pos += len(word.white_space)
                    surface = word.surface
                    lemma = word.feature.lemma or surface
                    # UniDic writes loanwords as ライン-line: keep the reading.
                    lemma = lemma.split("-", 1)[0] or surface
                    out.append(Token(surface, lemma, pos, pos + len(surface)))
                    pos += len(surface)
        return out

    def __call__(self, text):
        """Feature strings for TF-IDF: UniDic lemmas, so 送って and 送ります meet."""
        return [t.lemma for t in self.tokens(text)]


def _make_tokenizer(max_piece):
    return Tokenizer(max_piece=max_piece)
