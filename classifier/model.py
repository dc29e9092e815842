"""The scoring API: a loaded, verified pipeline; probabilities, flags and evidence."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .labels import LABELS
from .explain import evidence as _evidence
from .features import check_texts
from .fsutil import recover_dir
from .persist import load_model

__all__ = ["LABELS", "Model", "load", "default_model", "default_model_path", "check_texts", "CANARY_TOLERANCE"]

#: Canary probabilities may move this much (floating-point order on another
#: machine or library version) before a load is refused.
CANARY_TOLERANCE = 1e-4

_PACKAGE = Path(__file__).resolve().parent


def default_model_path() -> Path:
    """Where the default model is: ``$CLASSIFIER_MODEL``; else ``models/default`` of a checkout; else the packaged copy."""
    env = os.environ.get("CLASSIFIER_MODEL")
    if env:
        return Path(env)
    checkout = _PACKAGE.parent / "models" / "default"
    return checkout if (checkout / "manifest.json").is_file() else _PACKAGE / "default_model"


class Model:
    """A loaded, verified model. Get one with :func:`classifier.load`.

    ``predict_proba`` *is* ``pipeline.predict_proba``; ``score`` runs the
    same steps one by one so that it can keep each message's reading for the
    evidence.

    Attributes
    ----------
    pipeline : sklearn.pipeline.Pipeline
        ``read`` → ``features`` → ``clf``, fitted.
    labels : tuple of str
    thresholds : dict
        Per label, the probability from which it is flagged.
    review_lower : dict
        Per label, the lower edge of the band in which a message is "uncertain".
    manifest : dict
        Everything training recorded about the model.
    """

    def __init__(self, pipeline, manifest: dict, path: Path | None = None):
        self.pipeline = pipeline
        self.manifest = manifest
        self.path = path
        self.labels = tuple(manifest["labels"])
        self.thresholds = {k: float(manifest["thresholds"][k]) for k in self.labels}
        self.review_lower = {k: float(manifest["review_lower"][k]) for k in self.labels}

    def __repr__(self):
        return f"Model(path={str(self.path)!r}, thresholds={self.thresholds})"

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """``pipeline.predict_proba``: each label's probability, shape ``(len(texts), 2)``, columns in LABELS order."""
        texts = check_texts(texts, "predict_proba")
        if not texts:
            return np.zeros((0, len(self.labels)))
        return self.pipeline.predict_proba(texts)

    def score(self, texts: str | Iterable[str], *, evidence: bool = True) -> dict[str, Any] | list[dict[str, Any]]:
        """Score one text (returns a dict) or a list of texts (a list of dicts).

        Each dict: a probability per label, ``flagged`` (the labels at or
        above their threshold), ``uncertain`` (labels in the review band
        below it) and ``evidence`` (spans of the original text behind the
        flagged labels; empty with ``evidence=False``).
        """
        if isinstance(texts, str):
            return self.score([texts], evidence=evidence)[0]
        texts = check_texts(texts, "score")
        if not texts:
            return []
        docs, X, probs = self._run(texts)
        labels = self.labels
        cuts = [(label, self.review_lower[label], self.thresholds[label]) for label in labels]
        out = []
        for row in probs.tolist():
            row = [round(x, 6) for x in row]
            result = dict(zip(labels, row))
            result["flagged"] = [label for (label, _, top), x in zip(cuts, row) if x >= top]
            result["uncertain"] = [label for (label, low, top), x in zip(cuts, row) if low <= x < top]
            result["evidence"] = []
            out.append(result)
        if evidence:
            todo = [(i, r["flagged"]) for i, r in enumerate(out) if r["flagged"] and docs[i].text]
            for (i, _), spans in zip(todo, self._explain(docs, X, todo)):
                out[i]["evidence"] = spans
        return out

    def _run(self, texts):
        # The pipeline's steps one by one: what pipeline.predict_proba does, keeping the Docs and rows.
        steps = self.pipeline.named_steps
        docs = steps["read"].transform(texts)
        X = steps["features"].transform(docs)
        return docs, X, steps["clf"].predict_proba(X)

    def _explain(self, docs, X, todo):
        steps = self.pipeline.named_steps
        return _evidence(steps["features"], steps["clf"].coef_, self.labels, docs, X, todo)

    def explain(self, text: str, labels: Sequence[str] = LABELS) -> list[dict[str, Any]]:
        """Evidence spans of the original text for the given labels, strongest first."""
        unknown = [label for label in labels if label not in self.labels]
        if unknown:
            raise ValueError(f"unknown label {unknown[0]!r}; the labels are {list(self.labels)}")
        docs, X, _ = self._run(check_texts([text], "explain"))
        return self._explain(docs, X, [(0, list(labels))])[0] if docs[0].text else []


def load(path: str | os.PathLike | None = None) -> Model:
    """Load and verify a model directory (default: :func:`default_model_path`).

    Raises
    ------
    ModelLoadError
        If the directory, its manifest, its hash, its contents or its
        canary messages do not check out.
    """
    default = path is None and not os.environ.get("CLASSIFIER_MODEL")
    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        recover_dir(path)  # a swap that crashed between its two renames (where no atomic exchange exists)
    if default and not (path / "manifest.json").is_file():
        raise ModelLoadError(f"no default model at {path}: train one (`python -m classifier train`), "
                             "or set $CLASSIFIER_MODEL or pass --model")
    pipeline, manifest = load_model(path)
    model = Model(pipeline, manifest, path)
    _check_canaries(model)
    return model


_default = None
_default_lock = threading.Lock()


def default_model() -> Model:
    """The default model, loaded once per process (threads that ask at once wait for one load)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = load()
    return _default


def _check_canaries(model):
    canaries = model.manifest["canaries"]
    got = model.predict_proba([c["text"] for c in canaries])
    for canary, probs in zip(canaries, got):
        for label, p in zip(model.labels, probs):
            expected = canary[label]
            if not math.isclose(p, expected, abs_tol=CANARY_TOLERANCE):
                raise ModelLoadError(
                    f"canary {canary['text']!r} scores {label}={p:.6f}, the manifest says {expected:.6f} "
                    f"(tolerance {CANARY_TOLERANCE}): the tokenizer or a library changed since training; retrain"
                )
