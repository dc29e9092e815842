"""The scikit-learn pipeline: normalise, TF-IDF words and characters, linear model.

    texts -> Normalizer -> FeatureUnion(words: TF-IDF over lemma n-grams,
                                        chars: TF-IDF over character n-grams)
          -> CalibratedLinear (one logistic regression per label, Platt-scaled)
"""

import weakref
from itertools import chain, repeat
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils.validation import check_is_fitted

from .normalize import normalize
from .tokenize import Tokenizer

__all__ = ["DEFAULT_PARAMS", "Normalizer", "CalibratedLinear", "build_pipeline", "Vectors", "transform_read",
           "lemma_ids", "char_table", "char_ngrams", "code_points"]

DEFAULT_PARAMS = {
    "word_ngram_max": 2,
    "char_ngram_min": 1,
    "char_ngram_max": 3,
    "C": 4.0,
    "class_weight": "balanced",
}


class Normalizer(BaseEstimator, TransformerMixin):
    """Texts to their normalised form (see :mod:`classifier.normalize`)."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return [normalize(text).text for text in X]


def _identity(text):
    return text


def _vectorizers(params):
    words = TfidfVectorizer(
        tokenizer=Tokenizer(),
        preprocessor=_identity,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, params["word_ngram_max"]),
        sublinear_tf=True,
        min_df=2,
        dtype=np.float32,
    )
    chars = TfidfVectorizer(
        analyzer="char",
        preprocessor=_identity,
        lowercase=False,
        ngram_range=(params["char_ngram_min"], params["char_ngram_max"]),
        sublinear_tf=True,
        min_df=2,
        dtype=np.float32,
    )
    return words, chars


class CalibratedLinear(BaseEstimator, ClassifierMixin):
    """One logistic regression per label, with Platt-scaled probabilities.

    The scaling is fitted on out-of-fold decision values, so the
    probabilities mean what they say on messages the model has not seen.

    Parameters
    ----------
    C : float
        Inverse regularisation strength.
    class_weight : {"balanced", None}
        Weighting of the rare positive class.
    cv : int
        Folds for the out-of-fold decision values.
    random_state : int
        Seed for the folds and the solver.
    """

    def __init__(self, *, C=1.0, class_weight=None, cv=5, random_state=0):
        self.C = C
        self.class_weight = class_weight
        self.cv = cv
        self.random_state = random_state

    def _linear(self):
        return LogisticRegression(
            C=self.C,
            class_weight=self.class_weight,
            solver="liblinear",
            max_iter=1000,
            random_state=self.random_state,
        )

    def fit(self, X, Y, groups=None):
        Y = np.asarray(Y)
        coefs, intercepts, calib = [], [], []
        for k in range(Y.shape[1]):
            y = Y[:, k]
            folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
            splits = list(folds.split(X, y)) if groups is None else list(_group_folds(y, groups, self.cv, self.random_state))
            oof = cross_val_predict(self._linear(), X, y, cv=splits, method="decision_function")
            platt = LogisticRegression(C=1e6, solver="lbfgs").fit(oof.reshape(-1, 1), y)
            linear = self._linear().fit(X, y)
            coefs.append(linear.coef_[0])
            intercepts.append(linear.intercept_[0])
            calib.append([platt.coef_[0, 0], platt.intercept_[0]])
        self.coef_ = np.vstack(coefs)
        self.intercept_ = np.array(intercepts)
        self.calibration_ = np.array(calib)
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        return np.asarray(X @ self.coef_.T) + self.intercept_

    def predict_proba(self, X):
        """Calibrated probability of each label, shape (n_samples, n_labels)."""
        d = self.decision_function(X)
        z = d * self.calibration_[:, 0] + self.calibration_[:, 1]
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))

    def predict(self, X):
        return (self.predict_proba(X) >= 0.5).astype(int)


def _group_folds(y, groups, n_splits, seed):
    """Stratified folds that keep every group (a message and its variants) together."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed).split(y, y, groups))


class Vectors(NamedTuple):
    """What :func:`transform_read` made of a batch of texts."""

    #: The union's output, one row per text.
    X: object
    #: Each vectorizer's rows (words, chars), CSR with sorted indices.
    parts: list
    #: Per text, the feature number of each lemma n-gram (-1: not in the
    #: vocabulary), n by n, each by position; None if the words were not read.
    word_ids: list


def transform_read(union, readings):
    """The fitted feature union's transform of texts MeCab has already read.

    Equals ``union.transform([r.text for r in readings])`` bit for bit: the
    same counts, weighted by the vectorizers' own TF-IDF step. What it saves
    is the vectorizers' per-text Python (each asked the tokenizer again, and
    looked n-grams up one string at a time); scoring reads each text once
    and keeps what it found for the explanations.

    Parameters
    ----------
    union : FeatureUnion
        The fitted ``features`` step of :func:`build_pipeline`; another
        union is transformed the usual way.
    readings : list of Reading
        :meth:`Tokenizer.read` of each normalised text.

    Returns
    -------
    Vectors
    """
    texts = [r.text for r in readings]
    parts, word_ids = [], None
    for _, vec in union.transformer_list:
        if _is_lemma_vectorizer(vec):
            word_ids = [lemma_ids(r.lemmas(), vec) for r in readings]
            counts = _count_matrix(vec, word_ids)
        elif _is_char_vectorizer(vec):
            # As sklearn's char analyzer: runs of whitespace are one space.
            counts = _char_count_matrix(vec, [vec._white_spaces.sub(" ", t) for t in texts])
        else:
            parts.append(sp.csr_array(vec.transform(texts)))
            continue
        # The vectorizer's own TF-IDF step (private in scikit-learn, whose version is pinned).
        parts.append(vec._tfidf.transform(counts, copy=False))
    for part in parts:
        part.sort_indices()
    return Vectors(sp.hstack(parts).tocsr(), parts, word_ids)


def lemma_ids(lemmas, vec):
    """The feature number of each lemma n-gram, -1 if not in ``vec``'s vocabulary; n by n, each by position."""
    lo, hi = vec.ngram_range
    count = len(lemmas) if hi == 1 else sum(max(len(lemmas) - n + 1, 0) for n in range(lo, hi + 1))
    return np.fromiter(map(vec.vocabulary_.get, _ngrams(lemmas, vec.ngram_range, " ".join), repeat(-1)),
                       dtype=np.intp, count=count)


def _is_lemma_vectorizer(vec):
    return (isinstance(vec, TfidfVectorizer) and vec.analyzer == "word" and isinstance(vec.tokenizer, Tokenizer)
            and vec.preprocessor is _identity and not vec.lowercase and vec.stop_words is None and not vec.binary)


def _is_char_vectorizer(vec):
    return (isinstance(vec, TfidfVectorizer) and vec.analyzer == "char" and vec.preprocessor is _identity
            and not vec.lowercase and not vec.binary and char_table(vec) is not None)


def _ngrams(seq, ngram_range, join):
    """The n-grams sklearn's analyzers make of a sequence (in another order), as an iterator."""
    lo, hi = ngram_range
    if hi == 1:
        return iter(seq)
    grams = [seq] if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(seq)) + 1):
        grams.append(map(join, zip(*(seq[k:] for k in range(n)))))
    return chain.from_iterable(grams)


def _count_matrix(vec, ids):
    """Counts per text of the features numbered ``ids`` (one array per text), as ``CountVectorizer.transform`` has them."""
    rows = np.repeat(np.arange(len(ids)), [len(i) for i in ids])
    cols = np.concatenate(ids) if ids else np.zeros(0, dtype=np.intp)
    known = cols >= 0
    return _counts(vec, rows[known], cols[known], len(ids))


def _counts(vec, rows, cols, n_rows):
    # Duplicates are summed: the counts, exact in float32 below 2**24.
    X = sp.csr_array((np.ones(len(rows), dtype=vec.dtype), (rows, cols)), shape=(n_rows, len(vec.vocabulary_)))
    X.sum_duplicates()
    X.sort_indices()
    return X


# A character n-gram is a number: its code points, 21 bits each (three fit
# in 64). Looking numbers up in a sorted array, a batch at a time, costs a
# fraction of a dict lookup per n-gram string: most of the time went there.
_BITS = 21
_CHAR_TABLES = weakref.WeakKeyDictionary()


def code_points(text):
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)


def char_table(vec):
    """A char vectorizer's vocabulary as {n: (sorted n-gram codes, their feature numbers)}; None if n > 3."""
    vocabulary, table = _CHAR_TABLES.get(vec, (None, None))
    if vocabulary is not vec.vocabulary_:  # none yet, or the vectorizer was fitted again
        lo, hi = vec.ngram_range
        if hi * _BITS > 64:
            return None
        grams = list(vec.vocabulary_)
        ids = np.fromiter(vec.vocabulary_.values(), dtype=np.intp, count=len(grams))
        sizes = np.fromiter(map(len, grams), dtype=np.intp, count=len(grams))
        points = code_points("".join(grams))
        first = np.cumsum(sizes) - sizes
        table = {}
        for n in range(lo, hi + 1):
            at = first[sizes == n]
            codes = np.zeros(len(at), dtype=np.uint64)
            for k in range(n):
                codes = (codes << np.uint64(_BITS)) | points[at + k]
            order = np.argsort(codes)
            table[n] = (codes[order], ids[sizes == n][order])
        _CHAR_TABLES[vec] = (vec.vocabulary_, table)
    return table


def char_ngrams(points, table):
    """Per n: (position, feature number) of each n-gram of the vocabulary in code points ``points``."""
    for n, (codes, ids) in table.items():
        m = len(points) - n + 1
        if m <= 0 or not len(codes):
            yield n, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
            continue
        code = points[:m].copy()
        for k in range(1, n):
            code <<= np.uint64(_BITS)
            code |= points[k : k + m]
        at = np.minimum(np.searchsorted(codes, code), len(codes) - 1)
        hit = np.flatnonzero(codes[at] == code)
        yield n, hit, ids[at[hit]]


def _char_count_matrix(vec, texts):
    """Counts of the vocabulary's character n-grams per text, as ``CountVectorizer.transform`` builds them."""
    points = code_points("".join(texts))
    owner = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
    rows, cols = [], []
    for n, at, ids in char_ngrams(points, char_table(vec)):
        inside = owner[at] == owner[at + n - 1]  # not across two texts
        rows.append(owner[at[inside]])
        cols.append(ids[inside])
    return _counts(vec, np.concatenate(rows), np.concatenate(cols), len(texts))


def build_pipeline(params=None, *, random_state=0):
    """A fresh, unfitted pipeline for the given hyper-parameters."""
    params = {**DEFAULT_PARAMS, **(params or {})}
    words, chars = _vectorizers(params)
    return Pipeline(
        [
            ("normalize", Normalizer()),
            ("features", FeatureUnion([("words", words), ("chars", chars)])),
            ("clf", CalibratedLinear(C=params["C"], class_weight=params["class_weight"], random_state=random_state)),
        ]
    )
