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

__all__ = ["Token", "Tokenizer", "Reading"]

_SENTENCE_END = re.compile(r"[。！？!?\n]")

# MeCab writes each token as its lemma (UniDic's field 7; MeCab reads the
# CSV) and its surface, between separators that normalised text cannot hold
# (it has no C0 controls), and one split reads a whole piece: a Python object
# per token (fugashi's nodes and feature tuples) cost more than MeCab's own
# work. Unknown words have no field 7 (asking for it crashes MeCab), so
# theirs is written empty. "-O ''" sets aside the dictionary's own output
# format, which would override --node-format; EOS is written so that
# fugashi's rstrip() of the output cannot eat a separator.
_FORMAT = "%f[7]\x1f%m\x1f"
_TAGGER_ARGS = f"-O '' --node-format={_FORMAT} --unk-format=\x1f%m\x1f --bos-format= --eos-format=EOS"
_SEPARATORS = re.compile("[\x1e\x1f]")


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
        local = self._tagger()
        parse = local.writer.parse
        if len(text) <= self.max_piece and "<" not in text and not _SEPARATORS.search(text):
            # One piece, no placeholder (each starts with "<"): what the loop below makes of it.
            fields = parse(text).split("\x1f") if text else ["EOS"]
            return Reading(text, _lemmas(fields), fields[1::2])
        lemmas, surfaces = [], []
        for a, b, is_placeholder in split_placeholders(text):
            if is_placeholder:
                lemmas.append(text[a:b])
                surfaces.append(text[a:b])
                continue
            for pa, pb in _pieces(text, a, b, self.max_piece):
                piece = text[pa:pb]
                if _SEPARATORS.search(piece):
                    if local.tagger is None:
                        import fugashi

                        local.tagger = fugashi.Tagger()
                    fields = _by_node(local.tagger, piece)
                else:
                    fields = parse(piece).split("\x1f")
                lemmas += _lemmas(fields)
                surfaces += fields[1::2]
        return Reading(text, lemmas, surfaces)

    def tokens(self, text):
        """Tokens of a normalised text, with their offsets in it.

        A placeholder such as ``<email>`` is one token.
        """
        return self.read(text).tokens()

    def __call__(self, text):
        """Feature strings for TF-IDF: UniDic lemmas, so 送って and 送ります meet."""
        return self.read(text).lemmas()


def _lemmas(fields):
    """The lemmas of ``_FORMAT`` output split at its separators (lemma, surface, …, "EOS"): each cut at its
    first "-" (UniDic writes loanwords as ライン-line), the surface where nothing is left."""
    return [lemma.partition("-")[0] or surface for lemma, surface in zip(fields[0:-1:2], fields[1::2])]


def _by_node(tagger, piece):
    """The fields of a text that holds the separators, read node by node (the slow way), as ``_lemmas`` takes them."""
    fields = []
    for word in tagger(piece):
        fields += [word.feature.lemma or "", word.surface]
    return fields + ["EOS"]


def _make_tokenizer(max_piece):
    return Tokenizer(max_piece=max_piece)
