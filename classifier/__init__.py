"""Catch scam clients on Japanese crowdsourcing platforms.

>>> import classifier
>>> classifier.score("LINEのIDを教えてください")["flagged"]
['off_platform']

Importing the package is cheap: scikit-learn, MeCab and the model are loaded
on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import BatchError, ClassifierError, DataError, ModelLoadError, ModelVersionWarning

__version__ = "0.2.0"

__all__ = ["LABELS", "Model", "ClassifierError", "ModelLoadError", "ModelVersionWarning", "DataError", "BatchError",
           "load", "score", "review", "__version__"]

from .labels import LABELS

_LAZY = {"Model": ".model", "load": ".model"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def score(text_or_texts: str | list[str], *, evidence: bool = True) -> dict[str, Any] | list[dict[str, Any]]:
    """Score a text or a list of texts with the default model, loaded once per process.

    See :meth:`classifier.Model.score`.
    """
    from .model import default_model

    return default_model().score(text_or_texts, evidence=evidence)


def review(messages: list, approved: bool = False, model=None) -> dict[str, Any]:
    """Recommend approve, review or deny for one off-service contact request.

    See :func:`classifier.recommend.review`.
    """
    from .model import default_model
    from .recommend import review as _review

    return _review(messages, approved=approved, model=model or default_model())
