"""The scoring API: probabilities, flagged labels and evidence spans."""

import math
import os
from pathlib import Path

import numpy as np

from .normalize import normalize
from .persist import ModelLoadError, load_model

__all__ = ["LABELS", "Model", "load", "default_model_path", "check_texts"]

LABELS = ("off_platform", "peer_pressure")

#: Canary scores may move this much (float noise) before a load is refused.
CANARY_TOLERANCE = 1e-4
#: Evidence spans reported per flagged label.
MAX_SPANS = 5


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
        self._normalizer, union, self._clf = (step for _, step in pipeline.steps)
        self._words, self._chars = (vec for _, vec in union.transformer_list)
        self._tokenizer = self._words.tokenizer

    def __repr__(self):
        return f"Model(path={str(self.path)!r}, thresholds={self.thresholds})"

    def predict_proba(self, texts):
        """Probability of each label, shape ``(len(texts), 2)``, columns in LABELS order."""
        texts = check_texts(texts, "predict_proba")
        if not texts:
            return np.zeros((0, len(self.labels)))
        return self.pipeline.predict_proba(texts)

    def score(self, texts):
        """Score one text (returns a dict) or a list of texts (a list of dicts).

        Each dict: a probability per label, ``flagged`` (the labels at or above
        their threshold) and ``evidence`` (spans of the original text).
        """
        if isinstance(texts, str):
            return self.score([texts])[0]
        texts = check_texts(texts, "score")
        return [self._result(text, probs) for text, probs in zip(texts, self.predict_proba(texts))]

    def _result(self, text, probs):
        result = {label: round(float(p), 6) for label, p in zip(self.labels, probs)}
        flagged = [label for label in self.labels if result[label] >= self.thresholds[label]]
        result["flagged"] = flagged
        result["evidence"] = self.explain(text, flagged) if flagged else []
        return result

    def explain(self, text, labels=LABELS):
        """Evidence spans of the original text for the given labels, strongest first.

        Each feature's contribution (its TF-IDF value times its coefficient) is
        spread over the characters of its occurrences; runs of characters
        carrying a clear share of the positive weight become spans.
        """
        norm = normalize(text)
        if not norm.text:
            return []
        word_vec, char_vec = self._feature_rows(norm.text)
        tokens = self._tokenizer.tokens(norm.text)
        n_words = len(self._words.vocabulary_)
        spans = []
        for label in labels:
            k = self.labels.index(label)
            coef = self._clf.coef_[k]
            weight = np.zeros(len(norm.text))
            _spread(weight, _word_occurrences(tokens, self._words), word_vec, coef[:n_words])
            _spread(weight, _char_occurrences(norm.text, self._chars), char_vec, coef[n_words:])
            spans += _spans(norm, weight, label)
        spans.sort(key=lambda s: -s["weight"])
        return spans

    def _feature_rows(self, normalized_text):
        word_row = self._words.transform([normalized_text]).tocsr()
        char_row = self._chars.transform([normalized_text]).tocsr()
        return _as_dict(word_row), _as_dict(char_row)


def _as_dict(row):
    return dict(zip(row.indices.tolist(), row.data.tolist()))


def _word_occurrences(tokens, vec):
    lemmas = [t.lemma for t in tokens]
    lo, hi = vec.ngram_range
    vocab = vec.vocabulary_
    for n in range(lo, hi + 1):
        for i in range(len(lemmas) - n + 1):
            j = vocab.get(" ".join(lemmas[i : i + n]))
            if j is not None:
                yield j, tokens[i].start, tokens[i + n - 1].end


def _char_occurrences(text, vec):
    lo, hi = vec.ngram_range
    vocab = vec.vocabulary_
    for n in range(lo, hi + 1):
        for i in range(len(text) - n + 1):
            j = vocab.get(text[i : i + n])
            if j is not None:
                yield j, i, i + n


def _spread(weight, occurrences, values, coef):
    occurrences = list(occurrences)
    counts = {}
    for j, _, _ in occurrences:
        counts[j] = counts.get(j, 0) + 1
    for j, a, b in occurrences:
        contribution = values.get(j, 0.0) * coef[j]
        if contribution > 0:
            weight[a:b] += contribution / counts[j] / (b - a)


def _spans(norm, weight, label):
    top = weight.max() if len(weight) else 0.0
    if top <= 0:
        return []
    hot = weight >= 0.25 * top
    spans, i, n = [], 0, len(weight)
    while i < n:
        if not hot[i]:
            i += 1
            continue
        j = i
        while j < n and (hot[j] or (j + 1 < n and hot[j + 1])):
            j += 1
        start, end = norm.span(i, j)
        span = {
            "label": label,
            "start": start,
            "end": end,
            "text": norm.original[start:end],
            "weight": round(float(weight[i:j].sum()), 4),
        }
        if norm.text[i:j] != span["text"]:
            span["normalized"] = norm.text[i:j]
        spans.append(span)
        i = j
    spans.sort(key=lambda s: -s["weight"])
    return spans[:MAX_SPANS]


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
