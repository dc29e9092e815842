"""The scoring API: probabilities, flagged labels and evidence spans."""

import math
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .features import char_ngrams, char_table, code_points, lemma_ids, transform_read
from .normalize import PLACEHOLDER_RE, normalize
from .persist import ModelLoadError, load_model
from .tokenize import _pieces

__all__ = ["LABELS", "Model", "load", "default_model_path", "check_texts"]

LABELS = ("off_platform", "peer_pressure")

#: Canary scores may move this much (float noise) before a load is refused.
CANARY_TOLERANCE = 1e-4
#: Evidence spans reported per flagged label.
MAX_SPANS = 5
#: Texts longer than this (normalised) are also scored window by window.
WINDOW = 1000


def default_model_path():
    """``$CLASSIFIER_MODEL`` if set, else ``models/default`` beside the package."""
    env = os.environ.get("CLASSIFIER_MODEL")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models" / "default"


def check_texts(texts, caller):
    """Validate a list of texts; a bare string is refused, not split into letters."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{caller} expects a list of texts, got a single {type(texts).__name__}; wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{caller} expects a list of texts, got {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{caller}: text at position {i} is {type(text).__name__}, expected str")
    return texts


class Model:
    """A loaded, verified model. Get one with :func:`classifier.load`.

    Attributes
    ----------
    labels : tuple of str
    thresholds : dict
        Per label, the probability from which it is flagged.
    review_lower : dict
        Per label, the lower edge of the band in which a human should look.
    manifest : dict
        Everything ``train.py`` recorded about the model.
    """

    def __init__(self, pipeline, manifest, path=None):
        self.pipeline = pipeline
        self.manifest = manifest
        self.path = path
        self.labels = tuple(manifest["labels"])
        if self.labels != LABELS:
            raise ModelLoadError(f"model labels {self.labels}, expected {LABELS}")
        self.thresholds = {k: float(manifest["thresholds"][k]) for k in self.labels}
        self.review_lower = {k: float(manifest.get("review_lower", manifest["thresholds"])[k]) for k in self.labels}
        self._normalizer, self._union, self._clf = (step for _, step in pipeline.steps)
        self._words, self._chars = (vec for _, vec in self._union.transformer_list)
        self._tokenizer = self._words.tokenizer

    def __repr__(self):
        return f"Model(path={str(self.path)!r}, thresholds={self.thresholds})"

    def predict_proba(self, texts):
        """Probability of each label, shape ``(len(texts), 2)``, columns in LABELS order."""
        texts = check_texts(texts, "predict_proba")
        if not texts:
            return np.zeros((0, len(self.labels)))
        return self._read(texts)[0]

    def _read(self, texts):
        """``pipeline.predict_proba(texts)``, and what it learnt on the way.

        The pipeline's own steps, but each text is normalised and read by
        MeCab once: the normalised texts, readings and feature rows are kept
        for the explanations of the flagged ones.
        """
        norms = [normalize(text) for text in texts]
        readings = [self._tokenizer.read(norm.text) for norm in norms]
        vectors = transform_read(self._union, readings)
        probs = self._clf.predict_proba(vectors.X)
        for i, norm in enumerate(norms):
            if len(norm.text) > WINDOW:
                probs[i] = np.maximum(probs[i], self._window_max(norm.text))
        return probs, norms, readings, vectors

    def _window_max(self, text):
        """The highest probability of each label over windows of a long text.

        A message is as suspicious as its worst part: in a long text the TF-IDF
        weights of a short solicitation are diluted by everything around it
        (padding is an evasion), so windows of about WINDOW characters, cut at
        sentence ends, are scored too.
        """
        windows = [text[a:b] for a, b in _pieces(text, 0, len(text), WINDOW)]
        readings = [self._tokenizer.read(w) for w in windows]
        return self._clf.predict_proba(transform_read(self._union, readings).X).max(axis=0)

    def score(self, texts):
        """Score one text (returns a dict) or a list of texts (a list of dicts).

        Each dict: a probability per label, ``flagged`` (the labels at or above
        their threshold) and ``evidence`` (spans of the original text).
        """
        if isinstance(texts, str):
            return self.score([texts])[0]
        texts = check_texts(texts, "score")
        if not texts:
            return []
        probs, norms, readings, vectors = self._read(texts)
        out = []
        for p in probs:
            result = {label: round(float(x), 6) for label, x in zip(self.labels, p)}
            result["flagged"] = [label for label in self.labels if result[label] >= self.thresholds[label]]
            result["evidence"] = []
            out.append(result)
        todo = [(i, r["flagged"]) for i, r in enumerate(out) if r["flagged"] and norms[i].text]
        for (i, _), evidence in zip(todo, self._evidence(norms, readings, vectors, todo)):
            out[i]["evidence"] = evidence
        return out

    def explain(self, text, labels=LABELS):
        """Evidence spans of the original text for the given labels, strongest first.

        Each feature's contribution (its TF-IDF value times its coefficient) is
        spread over the characters of its occurrences; runs of characters
        carrying a clear share of the positive weight become spans.
        """
        norm = normalize(text)
        if not norm.text:
            return []
        reading = self._tokenizer.read(norm.text)
        return self._evidence([norm], [reading], transform_read(self._union, [reading]), [(0, labels)])[0]

    def _evidence(self, norms, readings, vectors, todo):
        """:meth:`explain` for texts of a batch already read: ``todo`` lists (index, labels), one list of spans each out.

        The occurrences of all the texts are weighed at once, in one array
        with each text's characters in turn; every character's sum is still
        the one :meth:`explain` of its text alone would make (see _spread).
        """
        if not todo:
            return []
        which = [i for i, _ in todo]
        texts = [norms[i].text for i in which]
        lengths = [len(t) for t in texts]
        bases = np.cumsum([0] + lengths)
        n_words = len(self._words.vocabulary_)
        # (text, feature, start, end) arrays: per text, in the order a loop over one text visits them.
        ids = [vectors.word_ids[i] if vectors.word_ids is not None else lemma_ids(readings[i].lemmas(), self._words)
               for i in which]
        found = _word_occurrences(ids, [readings[i] for i in which], bases, self._words.ngram_range)
        found += _char_occurrences(texts, lengths, bases, self._chars, n_words)
        owner, js, starts, ends = (np.concatenate(column) for column in zip(*found))
        sizes = ends - starts
        keep = sizes > 0  # (an empty occurrence has no characters to weigh)
        owner, js, starts, sizes = owner[keep], js[keep], starts[keep], sizes[keep]
        # Each occurrence's feature value in its text's row (0 if absent), and
        # how often the feature occurs in that text.
        rows = sp.hstack([vectors.parts[0][which], vectors.parts[1][which]]).tocsr()
        rows.sort_indices()
        width = n_words + len(self._chars.vocabulary_)
        row_keys = np.repeat(np.arange(len(which)), np.diff(rows.indptr)) * width + rows.indices
        keys = owner * width + js
        values = np.zeros(len(keys))  # float32 values, held exactly as float64
        if len(row_keys):
            at = np.minimum(np.searchsorted(row_keys, keys), len(row_keys) - 1)
            present = row_keys[at] == keys
            values[present] = rows.data[at[present]]
        _, which_key, counts = np.unique(keys, return_inverse=True, return_counts=True)
        occurrences = (js, values, counts[which_key.ravel()], sizes, *_places(starts, sizes))
        runs = {}
        for k, label in enumerate(self.labels):
            weight = _spread(bases[-1], occurrences, self._clf.coef_[k])
            runs[label] = (weight, _hot_runs(weight, bases))
        out = []
        for k, (i, labels) in enumerate(todo):
            spans = []
            for label in labels:
                self.labels.index(label)  # an unknown label is a ValueError, as it always was
                weight, hot = runs[label]
                spans += _spans(norms[i], weight, bases[k], hot[k], label)
            spans.sort(key=lambda s: -s["weight"])
            out.append(spans)
        return out


def _word_occurrences(ids, readings, bases, ngram_range):
    """Where the texts' lemma n-grams of the vocabulary occur: [(text, features, starts, ends)], n by n.

    ``ids`` are the feature numbers of each text's lemma n-grams (n by n, -1
    where not in the vocabulary); starts and ends count from the first text.
    """
    starts, ends, counts = [], [], []
    for reading in readings:
        a, b = reading.offsets()
        starts += a
        ends += b
        counts.append(len(a))
    starts, ends = np.array(starts, dtype=np.intp), np.array(ends, dtype=np.intp)
    counts = np.array(counts, dtype=np.intp)
    # Token numbers count from the first text too; places in the texts as well.
    first_token = np.cumsum(counts) - counts
    shift = np.repeat(np.asarray(bases[: len(counts)], dtype=np.intp), counts)
    starts, ends = starts + shift, ends + shift
    ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.intp)
    lo, hi = ngram_range
    ns = range(lo, hi + 1) if hi > 1 else [1]  # as lemma_ids lays them out
    sizes = [np.maximum(counts - n + 1, 0) for n in ns]
    per_text = np.sum(sizes, axis=0)
    id_base = np.cumsum(per_text) - per_text
    found, before = [], np.zeros(len(counts), dtype=np.intp)
    for n, size in zip(ns, sizes):
        # The n-grams of every text: its ids from id_base + before, its tokens from first_token.
        owner = np.repeat(np.arange(len(counts)), size)
        within = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
        js = ids[id_base[owner] + before[owner] + within]
        token = first_token[owner] + within
        hit = np.flatnonzero(js >= 0)
        found.append((owner[hit], js[hit], starts[token[hit]], ends[token[hit] + n - 1]))
        before += size
    return found


def _char_occurrences(texts, lengths, bases, vec, offset):
    """Where the vocabulary's character n-grams occur in the texts: [(text, features + offset, starts, ends)].

    In the texts as they are (the vectorizer saw runs of whitespace as one
    space), n by n, each by position; starts and ends count from the first text.
    """
    table = char_table(vec)
    owner = np.repeat(np.arange(len(texts)), lengths)
    if table is not None:
        found = []
        for n, at, ids in char_ngrams(code_points("".join(texts)), table):
            inside = owner[at] == owner[at + n - 1]  # not across two texts
            at, ids = at[inside], ids[inside]
            found.append((owner[at], ids + offset, at, at + n))
        return found
    found = []  # n-grams too long to be numbers: looked up one by one, text by text
    lo, hi = vec.ngram_range
    for k, text in enumerate(texts):
        for n in range(lo, hi + 1):
            at = [i for i in range(len(text) - n + 1) if text[i : i + n] in vec.vocabulary_]
            ids = np.array([vec.vocabulary_[text[i : i + n]] for i in at], dtype=np.intp)
            at = np.array(at, dtype=np.intp) + bases[k]
            found.append((np.full(len(at), k), ids + offset, at, at + n))
    return found


def _places(starts, lengths):
    """Per character of every occurrence, in order: the occurrence, and the character's place."""
    owner = np.repeat(np.arange(len(starts)), lengths)
    return owner, np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths - starts, lengths)


def _spread(size, occurrences, coef):
    """Weights of characters: each occurrence's share of its feature's positive contribution.

    As a loop over the occurrences doing ``weight[a:b] += value * coef /
    count / (b - a)`` where the contribution is positive would make them, to
    the last bit: ``np.add.at`` adds unbuffered and in order, and the other
    occurrences add +0.0, which changes no sum.
    """
    js, values, counts, lengths, owner, places = occurrences
    contribution = values * coef[js]
    share = np.where(contribution > 0, contribution / counts / lengths, 0.0)
    weight = np.zeros(size)
    np.add.at(weight, places, share[owner])
    return weight


def _hot_runs(weight, bases):
    """Per text, the runs (start, end) of its characters that become spans.

    A run starts at a character weighing at least a quarter of the text's
    heaviest (if that is positive) and goes on while the character, or the
    next one in the text, does: a gap of one character is bridged.
    """
    lengths = np.diff(bases)
    top = np.maximum.reduceat(weight, bases[:-1])
    hot = (weight >= np.repeat(0.25 * top, lengths)) & np.repeat(top > 0, lengths)
    last = np.zeros(len(weight), dtype=bool)
    last[bases[1:] - 1] = True  # a text's last character has no next one
    covered = hot.copy()
    covered[:-1] |= hot[1:] & ~last[:-1]
    first = np.zeros(len(weight), dtype=bool)
    first[bases[:-1]] = True
    run_start = np.flatnonzero(covered & (first | ~np.roll(covered, 1)))
    run_end = np.flatnonzero(covered & (last | ~np.roll(covered, -1))) + 1
    # A run that starts on a bridging character starts on the hot one after it.
    run_start += ~hot[run_start]
    owner = np.searchsorted(bases, run_start, side="right") - 1
    runs = [[] for _ in range(len(lengths))]
    for k, a, b in zip(owner.tolist(), run_start.tolist(), run_end.tolist()):
        runs[k].append((a, b))
    return runs


def _spans(norm, weight, base, runs, label):
    """The spans of one text: runs of ``weight[base:]`` (in the text's own places), heaviest first."""
    spans = []
    for a, b in runs:
        i, j = _widen(norm.text, a - base, b - base)
        start, end = norm.span(i, j)
        span = {
            "label": label,
            "start": start,
            "end": end,
            "text": norm.original[start:end],
            "weight": round(float(weight[a:b].sum()), 4),
        }
        if norm.text[i:j] != span["text"]:
            span["normalized"] = norm.text[i:j]
        spans.append(span)
    spans.sort(key=lambda s: -s["weight"])
    # A stray character or two carrying a sliver of the weight is noise to a reader.
    top = spans[0]["weight"] if spans else 0
    return [s for s in spans if s["weight"] >= 0.1 * top][:MAX_SPANS]


def _widen(text, i, j):
    """Widen ``[i, j)`` to whole placeholders: a span never ends inside ``<email>``."""
    for m in PLACEHOLDER_RE.finditer(text, max(0, i - 10), min(len(text), j + 10)):
        if m.start() < j and m.end() > i:
            i, j = min(i, m.start()), max(j, m.end())
    return i, j


def load(path=None):
    """Load and verify a model directory (default: the shipped model).

    Raises
    ------
    ModelLoadError
        If the directory, its manifest, its hash, its contents or its
        canary messages do not check out.
    """
    path = Path(path) if path is not None else default_model_path()
    pipeline, manifest = load_model(path)
    model = Model(pipeline, manifest, path)
    _check_canaries(model)
    return model


def _check_canaries(model):
    canaries = model.manifest.get("canaries", [])
    if not canaries:
        return
    got = model.predict_proba([c["text"] for c in canaries])
    for canary, probs in zip(canaries, got):
        for label, p in zip(model.labels, probs):
            expected = canary[label]
            if not math.isclose(p, expected, abs_tol=CANARY_TOLERANCE):
                raise ModelLoadError(
                    f"canary {canary['text']!r} scores {label}={p:.6f}, the manifest says {expected:.6f}: "
                    "the tokenizer or a library changed since training; retrain with train.py"
                )
