"""Features: texts read once, then TF-IDF over lemma and character n-grams.

Two public scikit-learn transformers, the first steps of the pipeline:

    texts -> TextReader -> [Doc]          normalised text + MeCab's reading, kept
          -> TextFeatures -> CSR matrix   TF-IDF words | TF-IDF characters

``TextFeatures.fit`` learns its vocabularies and idf weights with
scikit-learn's ``TfidfVectorizer``; ``transform`` computes the same rows with
integer n-gram codes a batch at a time (``tests/test_pipeline.py`` checks
the two agree).
"""

import re
from functools import lru_cache
from itertools import chain, repeat
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.utils.validation import check_is_fitted

from .normalize import TOOL_NAMES, Normalized, normalize
from .tokenize import Reading, Tokenizer

__all__ = ["Doc", "TextReader", "TextFeatures", "check_texts", "word_analyzer", "char_analyzer", "find"]


def check_texts(texts, caller):
    """A list of str, or a TypeError saying what arrived: a bare string is refused, not split into letters."""
    if isinstance(texts, (str, bytes, dict)):
        raise TypeError(f"{caller} expects a list of texts, got a single {type(texts).__name__}; wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{caller} expects a list of texts, got {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{caller}: text at position {i} is {type(text).__name__}, expected str")
    return texts


class Doc(NamedTuple):
    """One message as every later step reads it."""

    #: The normalised text, with its map back to the original.
    norm: Normalized
    #: MeCab's reading of ``norm.text``: lemmas for the features, tokens and offsets for the evidence.
    reading: Reading

    @property
    def text(self):
        return self.norm.text


@lru_cache(maxsize=None)
def _tokenizer(max_piece):
    # One per setting and process; a Tokenizer keeps a MeCab tagger per thread.
    return Tokenizer(max_piece=max_piece)


class TextReader(TransformerMixin, BaseEstimator):
    """Texts to :class:`Doc`: disguises undone, then read by MeCab, once.

    Stateless: ``fit`` learns nothing.

    Parameters
    ----------
    max_piece : int
        Longest text handed to MeCab at once (see :mod:`classifier.tokenize`).
    """

    def __init__(self, *, max_piece=1000):
        self.max_piece = max_piece

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        norms = list(map(normalize, check_texts(X, "transform")))
        return list(map(Doc, norms, _tokenizer(self.max_piece).read_many([norm.text for norm in norms])))

    def __sklearn_is_fitted__(self):
        return True


def _docs(X, caller):
    X = list(X)
    for i, doc in enumerate(X):
        if not isinstance(doc, Doc):
            raise TypeError(f"{caller}: item {i} is {type(doc).__name__}, expected a Doc from TextReader")
    return X


#: What contact tools become with ``tool_classes``: LINE, Chatwork, Telegram, Zoom … teach one another.
TOOL_CLASS = "<tool>"
_TOOL_NAMES = frozenset(TOOL_NAMES)


def lemmas(doc, tool_classes=False):
    """The lemmas a Doc's word features are made of; with ``tool_classes`` each contact tool's name is TOOL_CLASS."""
    out = doc.reading.lemmas()
    return [TOOL_CLASS if lemma in _TOOL_NAMES else lemma for lemma in out] if tool_classes else out


def word_analyzer(ngram_max, tool_classes=False):
    """The lemma n-grams of a Doc, as ``TfidfVectorizer(analyzer=...)`` wants them."""
    return _WordAnalyzer(ngram_max, tool_classes)


class _WordAnalyzer:
    # A class, not a closure, so that a vectorizer holding it pickles (joblib workers).
    def __init__(self, ngram_max, tool_classes=False):
        self.ngram_max = ngram_max
        self.tool_classes = tool_classes

    def __call__(self, doc):
        return list(_ngrams(lemmas(doc, self.tool_classes), (1, self.ngram_max), " ".join))


# scikit-learn's char analyzer reads runs of two or more whitespace characters as one space.
_WHITE = re.compile(r"\s\s+")


def char_analyzer(doc):
    """The text of a Doc as a character vectorizer reads it."""
    return _WHITE.sub(" ", doc.text)


def _ngrams(seq, ngram_range, join):
    """The n-grams scikit-learn's analyzers make of a sequence (n by n), as an iterator."""
    lo, hi = ngram_range
    if hi == 1:
        return iter(seq)
    grams = [seq] if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(seq)) + 1):
        grams.append(map(join, zip(*(seq[k:] for k in range(n)))))
    return chain.from_iterable(grams)


# A character n-gram is a number: its code points, 21 bits each (three fit
# in 64). Looking numbers up in a sorted array, a batch at a time, costs a
# fraction of a dict lookup per n-gram string.
_BITS = 21


def code_points(text):
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)


def char_ngrams(points, table):
    """Per n: (position, feature number) of each vocabulary n-gram in code points ``points``."""
    for n, (codes, ids) in table.items():
        m = len(points) - n + 1
        if m <= 0 or not len(codes):
            yield n, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
            continue
        code = points[:m].copy()
        for k in range(1, n):
            code <<= np.uint64(_BITS)
            code |= points[k : k + m]
        found = find(codes, ids, code)
        hit = np.flatnonzero(found >= 0)
        yield n, hit, found[hit]


def find(keys, values, queries):
    """The value of each query's key in sorted ``keys`` (-1 where it has none).

    Many queries (a batch's) are looked up each distinct one once, in sorted
    order: text repeats its n-grams, and a sorted search walks the keys in
    one direction (twice as fast as searching them in the text's order).
    """
    if not len(keys) or not len(queries):
        return np.full(len(queries), -1, dtype=np.intp)
    distinct, back = (queries, None) if len(queries) < FEW else np.unique(queries, return_inverse=True)
    at = np.minimum(np.searchsorted(keys, distinct), len(keys) - 1)
    found = np.where(keys[at] == distinct, values[at], -1)
    return found if back is None else found[back.ravel()]


#: Fewer queries than this are searched as they come (sorting them costs more than it saves).
FEW = 512


class TextFeatures(TransformerMixin, BaseEstimator):
    """TF-IDF rows of lemma n-grams and of character n-grams, side by side.

    Each half is what ``TfidfVectorizer(sublinear_tf=True, min_df=min_df)``
    makes (l2-normalised on its own), so ``n_words_`` columns of words come
    first, then the characters.

    Parameters
    ----------
    word_ngram_max : int
        Lemma n-grams from 1 to this.
    char_ngram_range : tuple of int
        Character n-grams, at most 3 long (they are coded as 64-bit numbers).
    min_df : int
        Least number of documents a term must occur in.
    tool_classes : bool
        Word features read every contact tool's name (normalised: line,
        chatwork, zoom …) as one class, so that what one tool teaches holds
        for the others; the character n-grams still see which tool it was.

    Attributes
    ----------
    words_, chars_ : ndarray of str
        The vocabularies, term ``i`` being feature ``i`` (words) or
        ``n_words_ + i`` (characters).
    word_idf_, char_idf_ : ndarray of float64
    n_words_ : int
    """

    def __init__(self, *, word_ngram_max=2, char_ngram_range=(1, 3), min_df=2, tool_classes=False):
        self.word_ngram_max = word_ngram_max
        self.char_ngram_range = char_ngram_range
        self.min_df = min_df
        self.tool_classes = tool_classes

    def _vectorizers(self):
        common = dict(sublinear_tf=True, min_df=self.min_df, lowercase=False, dtype=np.float64)
        words = TfidfVectorizer(analyzer=word_analyzer(self.word_ngram_max, self.tool_classes), **common)
        chars = TfidfVectorizer(analyzer="char", preprocessor=None, ngram_range=tuple(self.char_ngram_range), **common)
        return words, chars

    def fit(self, X, y=None):
        docs = _docs(X, "fit")
        if not 1 <= self.char_ngram_range[0] <= self.char_ngram_range[1] <= 3:
            raise ValueError(f"char_ngram_range must lie within (1, 3), got {self.char_ngram_range}")
        words, chars = self._vectorizers()
        words.fit(docs)
        chars.fit([doc.text for doc in docs])
        self.words_ = _terms(words.vocabulary_)
        self.word_idf_ = words.idf_.astype(np.float64)
        self.chars_ = _terms(chars.vocabulary_)
        self.char_idf_ = chars.idf_.astype(np.float64)
        self.n_words_ = len(self.words_)
        self._tables = None
        return self

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "words_")
        return np.concatenate([np.char.add("w:", self.words_), np.char.add("c:", self.chars_)]).astype(object)

    @property
    def vocabulary_(self):
        """{term: feature number} over both halves (characters prefixed ``c:``, words ``w:``)."""
        return {name: i for i, name in enumerate(self.get_feature_names_out())}

    def lookups(self):
        """(word vocabulary dict, char table) built from the fitted arrays, cached."""
        tables = self._lookup_tables()
        return tables.vocabulary, tables.chars

    def _lookup_tables(self):
        """The :class:`_Tables` built from the fitted arrays, cached (rebuilt when ``words_`` is another array)."""
        tables = getattr(self, "_tables", None)
        if tables is None or tables.words is not getattr(self, "words_", None):
            check_is_fitted(self, "words_")
            vocabulary = {t: i for i, t in enumerate(self.words_.tolist())}
            tables = _Tables(self.words_, vocabulary, _char_table(self.chars_.tolist(), self.char_ngram_range),
                             _word_table(self.words_.tolist(), vocabulary, self.word_ngram_max),
                             np.concatenate([self.word_idf_, self.char_idf_]))
            self._tables = tables
        return tables

    def _keyed_ngrams(self):
        """The word n-gram table of :func:`_word_table` (None: look n-grams up as strings), cached with the lookups."""
        return self._lookup_tables().word_ngrams

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_tables", None)  # rebuilt from the arrays
        return state

    def word_ids(self, doc):
        """Feature number of each lemma n-gram of a Doc (-1 if not in the vocabulary), n by n, each by position."""
        vocabulary, _ = self.lookups()
        return _word_ids(doc, vocabulary, self.word_ngram_max, self.tool_classes)

    def word_ids_many(self, docs):
        """``[self.word_ids(doc) for doc in docs]``, looked up a batch at a time where n-grams can be keyed."""
        vocabulary, _ = self.lookups()
        table = self._keyed_ngrams()
        if table is None or not docs:
            return [self.word_ids(doc) for doc in docs]
        owner, found = _keyed_ngram_ids([lemmas(doc, self.tool_classes) for doc in docs], vocabulary, table,
                                        len(self.words_))
        texts = np.concatenate([owner[at] for at, _ in found])
        order = np.argsort(texts, kind="stable")  # text by text, each n by n, each by position
        ids = np.concatenate([ids for _, ids in found])[order]
        return np.split(ids, np.cumsum(np.bincount(texts, minlength=len(docs)))[:-1])

    def transform(self, X):
        docs = _docs(X, "transform")
        tables = self._lookup_tables()  # (checks the step is fitted)
        n = len(docs)
        word_table = tables.word_ngrams
        if word_table is None:  # n-grams that cannot be keyed by their words: as strings, doc by doc
            ids = [self.word_ids(doc) for doc in docs]
            rows = np.repeat(np.arange(n), [len(i) for i in ids])
            cols = np.concatenate(ids) if n else np.zeros(0, dtype=np.intp)
        else:
            seqs = [lemmas(doc, self.tool_classes) for doc in docs]
            rows, cols = _word_hits(seqs, tables.vocabulary, word_table, len(self.words_))
        known = cols >= 0
        char_rows, char_cols = _char_hits([char_analyzer(doc) for doc in docs], tables.chars)
        n_words = len(self.word_idf_)
        return _tfidf_halves(np.concatenate([rows[known], char_rows]), np.concatenate([cols[known], char_cols + n_words]),
                             n, n_words, tables.idf)


class _Tables(NamedTuple):
    """What ``TextFeatures`` looks features up in, built from its fitted arrays."""

    words: np.ndarray  # the ``words_`` they were built from
    vocabulary: dict  # word n-gram -> feature number
    chars: dict  # see _char_table
    word_ngrams: dict  # see _word_table (None: n-grams looked up as strings)
    idf: np.ndarray  # both halves' idf, side by side


def _word_table(words, vocabulary, hi):
    """A word vocabulary's n-grams (n ≥ 2) as {n: (sorted keys, feature numbers)}, or None.

    An n-gram's key is its words' own feature numbers, read as the digits of
    one number in base ``len(words)``: every word of an n-gram in the
    vocabulary is in it too (it occurs in at least as many documents), so the
    texts' n-grams can be looked up by their words' numbers, a batch at a time.
    None where a key would not fit in 63 bits or an n-gram has a word the
    vocabulary lacks.
    """
    width = max(len(words), 1)
    if hi >= 2 and width ** hi >= 2**63:
        return None
    found = {n: ([], []) for n in range(2, hi + 1)}
    for i, term in enumerate(words):
        parts = term.split(" ")
        if len(parts) == 1:
            continue
        numbers = [vocabulary.get(part) for part in parts]
        if None in numbers or len(parts) not in found:
            return None
        key = 0
        for number in numbers:
            key = key * width + number
        found[len(parts)][0].append(key)
        found[len(parts)][1].append(i)
    table = {}
    for n, (keys, ids) in found.items():
        keys, ids = np.array(keys, dtype=np.int64), np.array(ids, dtype=np.intp)
        order = np.argsort(keys)
        table[n] = (keys[order], ids[order])
    return table


def _keyed_ngram_ids(seqs, vocabulary, table, width):
    """The lemma n-grams of the texts' lemma lists ``seqs``, looked up by their words' feature numbers.

    Returns each lemma's text, and per n (1 first) the places in the joined
    lists where an n-gram lies inside one text with its feature number (-1:
    not in the vocabulary).
    """
    flat = list(chain.from_iterable(seqs))
    words = np.fromiter(map(vocabulary.get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
    owner = np.repeat(np.arange(len(seqs)), [len(seq) for seq in seqs])
    found = [(np.arange(len(flat)), words.astype(np.intp))]
    for n, (keys, ids) in table.items():
        inside = np.flatnonzero(owner[: max(len(flat) - n + 1, 0)] == owner[n - 1 :])  # not across two texts
        known = np.ones(len(inside), dtype=bool)
        code = np.zeros(len(inside), dtype=np.int64)
        for k in range(n):
            part = words[inside + k]
            known &= part >= 0
            code = code * width + np.maximum(part, 0)
        found.append((inside, np.where(known, find(keys, ids, code), -1)))
    return owner, found


def _word_hits(seqs, vocabulary, table, width):
    """(row, feature) of every lemma n-gram of the texts' lemma lists ``seqs`` (-1: not in the vocabulary)."""
    owner, found = _keyed_ngram_ids(seqs, vocabulary, table, width)
    return np.concatenate([owner[at] for at, _ in found]), np.concatenate([ids for _, ids in found])


def _word_ids(doc, vocabulary, hi, tool_classes):
    seq = lemmas(doc, tool_classes)
    count = sum(max(len(seq) - n + 1, 0) for n in range(1, hi + 1))
    return np.fromiter(map(vocabulary.get, _ngrams(seq, (1, hi), " ".join), repeat(-1)), dtype=np.intp, count=count)


def _terms(vocabulary):
    terms = np.empty(len(vocabulary), dtype=object)
    for term, i in vocabulary.items():
        terms[i] = term
    return terms.astype(str) if len(terms) else np.zeros(0, dtype="<U1")


def _char_table(grams, ngram_range):
    """A char vocabulary as {n: (sorted n-gram codes, their feature numbers)}."""
    ids = np.arange(len(grams), dtype=np.intp)
    sizes = np.fromiter(map(len, grams), dtype=np.intp, count=len(grams))
    points = code_points("".join(grams))
    first = np.cumsum(sizes) - sizes
    table = {}
    for n in range(ngram_range[0], ngram_range[1] + 1):
        at = first[sizes == n]
        codes = np.zeros(len(at), dtype=np.uint64)
        for k in range(n):
            codes = (codes << np.uint64(_BITS)) | points[at + k]
        order = np.argsort(codes)
        table[n] = (codes[order], ids[sizes == n][order])
    return table


def char_occurrences(texts, table):
    """Per n: (text, position in the joined texts, feature) of each vocabulary n-gram lying inside one text."""
    points = code_points("".join(texts))
    owner = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
    for n, at, ids in char_ngrams(points, table):
        inside = owner[at] == owner[at + n - 1]  # not across two texts
        at = at[inside]
        yield n, owner[at], at, ids[inside]


def _char_hits(texts, table):
    """(row, feature) of every vocabulary character n-gram occurrence in the texts."""
    rows, cols = [np.zeros(0, dtype=np.intp)], [np.zeros(0, dtype=np.intp)]
    for _, owner, _, ids in char_occurrences(texts, table):
        rows.append(owner)
        cols.append(ids)
    return np.concatenate(rows), np.concatenate(cols)


def _tfidf_halves(rows, cols, n_rows, n_words, idf):
    """Sublinear TF-IDF rows of the word columns (< n_words) and of the char columns, side by side, in one pass.

    Each half is l2-normalised on its own, as two ``TfidfVectorizer`` would
    (``tests/test_pipeline.py``; ``tests/test_speed_paths.py`` checks it bit
    for bit against a half-by-half reference).
    """
    width = len(idf)
    keys, counts = np.unique(rows.astype(np.int64) * width + cols, return_counts=True)
    row = keys // width
    indices = (keys - row * width).astype(np.int32)
    data = (np.log(counts.astype(np.float64)) + 1.0) * idf[indices]
    group = row * 2 + (indices >= n_words)
    sums = np.bincount(group, weights=data**2, minlength=2 * n_rows)
    data /= np.sqrt(sums)[group]
    indptr = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(row, minlength=n_rows), out=indptr[1:])
    X = sp.csr_matrix((data, indices, indptr), shape=(n_rows, width))
    X.has_sorted_indices = True
    return X
