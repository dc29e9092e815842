"""Japanese tokenisation with fugashi and unidic-lite, safe for any input.

MeCab is fed normalised text only (no NUL, no surrogates), in bounded
pieces: its time grows with the square of a run of one character class and
long single inputs crash the process, so a message is cut at sentence and
line ends, and runs longer than ``max_piece`` are hard-split. Disguises that
straddle a cut are already undone by normalisation, which sees the whole text.
"""

import csv
import os
import re
import threading
from typing import NamedTuple

from .normalize import split_placeholders

__all__ = ["Token", "Tokenizer", "Reading"]

_SENTENCE_END = re.compile(r"[。！？!?\n]")

# MeCab writes each token as its leading whitespace, surface and UniDic
# features between separators that normalised text cannot hold (it has no C0
# controls), and one regex reads a whole piece: a Python object per token
# (fugashi's nodes and feature tuples) cost more than MeCab's own work.
# "-O ''" sets aside the dictionary's own output format, which would
# override --node-format; EOS is written so that fugashi's rstrip() of the
# output cannot eat a separator.
_FORMAT = "%pS\x1f%m\x1f%H\x1e"
_TAGGER_ARGS = f"-O '' --node-format={_FORMAT} --unk-format={_FORMAT} --bos-format= --eos-format=EOS"
_SEPARATORS = re.compile("[\x1e\x1f]")
# Per token: whitespace, surface, and the lemma (field 7) cut at its first
# "-" (UniDic writes loanwords as ライン-line) when the first eight fields are
# plain; a feature with fewer plain fields has no lemma; anything else
# (quotes, which fugashi reads as CSV) comes back whole, to be read as
# fugashi reads it.
# (The seven fields are spelt out: sre runs a repeated group far slower.)
_PLAIN = '[^,"\r\n\x1e]'
_RECORD = re.compile(
    "([^\x1f]*)\x1f([^\x1f]*)\x1f"
    f"(?:{(_PLAIN + '*,') * 7}([^,\"\r\n\x1e-]*)({_PLAIN}*)(?=[,\x1e])[^\x1e]*"
    f"|{_PLAIN}*(?:,{_PLAIN}*){{0,6}}"
    "|([^\x1e]*))\x1e"
)


def _lemma(surface, head, rest, feature):
    """The feature string of a token, as ``Tokenizer`` always defined it.

    ``word.feature.lemma or surface``, cut at its first "-", where fugashi
    splits the feature on commas, or reads it as CSV if it has a quote, and
    pads a short one with None.
    """
    if head:
        return head
    if rest:
        return surface  # the lemma starts with "-"
    lemma = None
    if feature:
        fields = next(csv.reader([feature])) if '"' in feature else feature.split(",")
        lemma = fields[7] if len(fields) > 7 else None
    lemma = lemma or surface
    return lemma.split("-", 1)[0] or surface


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
    """MeCab's reading of one normalised text, kept to give its lemmas or its tokens.

    Scoring needs the lemmas of every text and explaining needs the tokens,
    with offsets, of the flagged ones; both come from one reading.
    """

    __slots__ = ("text", "pieces")

    def __init__(self, text, pieces):
        self.text = text
        #: (start, end, records): None for a placeholder, else per token
        #: (whitespace, surface, lemma head, rest of lemma, feature) as _RECORD reads them.
        self.pieces = pieces

    def lemmas(self):
        """Feature strings for TF-IDF, as :meth:`Tokenizer.__call__` returns them."""
        out = []
        for start, end, records in self.pieces:
            if records is None:
                out.append(self.text[start:end])
            else:
                out += [head or _lemma(surface, head, rest, feature) for _, surface, head, rest, feature in records]
        return out

    def offsets(self):
        """Where each token starts and ends in the text (two lists), as :meth:`tokens` has them."""
        starts, ends = [], []
        for start, end, records in self.pieces:
            if records is None:
                starts.append(start)
                ends.append(end)
                continue
            pos = start
            for record in records:
                pos += len(record[0])
                starts.append(pos)
                pos += len(record[1])
                ends.append(pos)
        return starts, ends

    def tokens(self):
        """Tokens with their offsets in the text, as :meth:`Tokenizer.tokens` returns them."""
        text, out = self.text, []
        for start, end, records in self.pieces:
            if records is None:
                out.append(Token(text[start:end], text[start:end], start, end))
                continue
            pos = start
            for space, surface, head, rest, feature in records:
                pos += len(space)
                end = pos + len(surface)
                out.append(Token(surface, head or _lemma(surface, head, rest, feature), pos, end))
                pos = end
        return out


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
        pieces = []
        for a, b, is_placeholder in split_placeholders(text):
            if is_placeholder:
                pieces.append((a, b, None))
                continue
            for pa, pb in _pieces(text, a, b, self.max_piece):
                piece = text[pa:pb]
                if _SEPARATORS.search(piece):
                    if local.tagger is None:
                        import fugashi

                        local.tagger = fugashi.Tagger()
                    records = _by_node(local.tagger, piece)
                else:
                    # parse() ends with "EOS", which _RECORD does not match.
                    records = _RECORD.findall(parse(piece))
                pieces.append((pa, pb, records))
        return Reading(text, pieces)

    def tokens(self, text):
        """Tokens of a normalised text, with their offsets in it.

        A placeholder such as ``<email>`` is one token.
        """
        return self.read(text).tokens()

    def __call__(self, text):
        """Feature strings for TF-IDF: UniDic lemmas, so 送って and 送ります meet."""
        return self.read(text).lemmas()


def _by_node(tagger, piece):
    """Records of a text that holds the separators, read node by node (the slow way)."""
    records = []
    for word in tagger(piece):
        surface = word.surface
        lemma = word.feature.lemma or surface
        # UniDic writes loanwords as ライン-line: keep the reading.
        lemma = lemma.split("-", 1)[0] or surface
        records.append((word.white_space, surface, lemma, "", ""))
    return records


def _make_tokenizer(max_piece):
    return Tokenizer(max_piece=max_piece)
