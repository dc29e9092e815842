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
from itertools import accumulate
from typing import NamedTuple

from .normalize import split_placeholders

__all__ = ["Token", "Tokenizer", "Reading"]

_SENTENCE_END = re.compile(r"[。！？!?\n]")

# MeCab writes each token as its lemma (UniDic's field 7; MeCab reads the
# CSV) and its surface, between separators that normalised text cannot hold
# (it has no C0 controls), and a batch of outputs is read with one regex
# and one split: a Python object per token (fugashi's nodes and feature
# tuples) cost more than MeCab's own work. A lemma ends with \x1e, so that
# one regex can cut it at its first "-" (UniDic writes loanwords as
# ライン-line) without touching a surface. Unknown words have no field 7
# (asking for it crashes MeCab): their lemma is their surface, ended with
# \x1d, which is not cut. "-O ''" sets aside the dictionary's own output
# format, which would override --node-format; EOS is written so that
# fugashi's rstrip() of the output cannot eat a separator.
_FORMAT = "%f[7]\x1e%m\x1f"
_TAGGER_ARGS = f"-O '' --node-format={_FORMAT} --unk-format=%m\x1d%m\x1f --bos-format= --eos-format=EOS"
_SEPARATORS = re.compile("[\x1d\x1e\x1f]")
_LOANWORD_TAIL = re.compile("-[^\x1d\x1e\x1f]*\x1e")
# A lemma left empty (one that started with "-") is its token's surface.
_EMPTY_LEMMA = re.compile("(?<=\x1f)\x1e([^\x1f]*)\x1f")


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


class Reading:
    """MeCab's reading of one normalised text: its tokens' lemmas and surfaces, in order.

    Scoring needs the lemmas of every text; explaining needs the tokens'
    places too, for the flagged ones only: they are found on first use
    (MeCab skips only whitespace between tokens, so each surface is the next
    occurrence of itself).
    """

    __slots__ = ("text", "_lemmas", "surfaces")

    def __init__(self, text, lemmas, surfaces):
        self.text = text
        self._lemmas = lemmas
        #: The tokens' surfaces (a placeholder is one token).
        self.surfaces = surfaces

    def lemmas(self):
        """Feature strings for TF-IDF, as :meth:`Tokenizer.__call__` returns them (the list kept: do not change it)."""
        return self._lemmas

    def offsets(self):
        """Where each token starts and ends in the text (two lists), as :meth:`tokens` has them."""
        if "".join(self.surfaces) == self.text:  # no whitespace skipped: each token starts where the last ended
            ends = list(accumulate(map(len, self.surfaces)))
            return [0, *ends[:-1]] if ends else [], ends
        find, starts, ends, pos = self.text.find, [], [], 0
        for surface in self.surfaces:
            pos = find(surface, pos)
            starts.append(pos)
            pos += len(surface)
            ends.append(pos)
        return starts, ends

    def tokens(self):
        """Tokens with their offsets in the text, as :meth:`Tokenizer.tokens` returns them."""
        return [Token(*token) for token in zip(self.surfaces, self._lemmas, *self.offsets())]


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

            local.writer = fugashi.Tagger(_TAGGER_ARGS)
            local.tagger = None  # fugashi's nodes, built when first needed
            local.pid = os.getpid()
        return local

    def read(self, text):
        """MeCab's reading of a normalised text: see :class:`Reading`.

        A placeholder such as ``<email>`` is one token.
        """
        return self.read_many([text])[0]

    def read_many(self, texts):
        """Readings of normalised texts, as ``[self.read(text) for text in texts]``.

        MeCab reads each text (or each piece of a long one); the outputs are
        joined and read with one regex and one split.
        """
        local = self._tagger()
        parse = local.writer.parse
        owners, outs = [], []
        for i, text in enumerate(texts):
            if len(text) <= self.max_piece and "<" not in text and not _SEPARATORS.search(text):
                # One piece, no placeholder (each starts with "<"): the common case.
                owners.append(i)
                outs.append(parse(text) if text else "EOS")
            else:
                for out in self._piece_outputs(text, local):
                    owners.append(i)
                    outs.append(out)
        # Each output starts after a \x1f (the first too), so the one regex finds an empty lemma anywhere.
        joined = _LOANWORD_TAIL.sub("\x1e", "\x1f" + "\x1f".join([out if isinstance(out, str) else "EOS" for out in outs]))
        if "\x1f\x1e" in joined:
            joined = _EMPTY_LEMMA.sub("\\1\x1e\\1\x1f", joined)
        fields = joined.replace("\x1e", "\x1f").replace("\x1d", "\x1f").split("\x1f")
        readings = [Reading(text, [], []) for text in texts]
        at = 1
        for i, out in zip(owners, outs):
            reading = readings[i]
            if isinstance(out, str):
                end = at + 2 * out.count("\x1f")
                reading._lemmas += fields[at:end:2]
                reading.surfaces += fields[at + 1 : end : 2]
            else:  # read node by node
                end = at
                reading._lemmas += out[0]
                reading.surfaces += out[1]
            at = end + 1
        return readings

    def _piece_outputs(self, text, local):
        """MeCab's outputs for the pieces of a text, a placeholder written as an unknown word; a piece that holds
        the separators comes as (lemmas, surfaces), read node by node (the slow way)."""
        for a, b, is_placeholder in split_placeholders(text):
            if is_placeholder:
                yield f"{text[a:b]}\x1d{text[a:b]}\x1fEOS"
                continue
            for pa, pb in _pieces(text, a, b, self.max_piece):
                piece = text[pa:pb]
                if not _SEPARATORS.search(piece):
                    yield local.writer.parse(piece)
                    continue
                if local.tagger is None:
                    import fugashi

                    local.tagger = fugashi.Tagger()
                lemmas, surfaces = [], []
                for word in local.tagger(piece):
                    surfaces.append(word.surface)
                    lemmas.append((word.feature.lemma or "").partition("-")[0] or word.surface)
                yield lemmas, surfaces

    def tokens(self, text):
        """Tokens of a normalised text, with their offsets in it.

        A placeholder such as ``<email>`` is one token.
        """
        return self.read(text).tokens()

    def __call__(self, text):
        """Feature strings for TF-IDF: UniDic lemmas, so 送って and 送ります meet."""
        return self.read(text).lemmas()


def _make_tokenizer(max_piece):
    return Tokenizer(max_piece=max_piece)
