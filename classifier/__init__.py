"""Catch scam clients on Japanese crowdsourcing platforms.

>>> import classifier
>>> classifier.score("LINEのIDを教えてください")["flagged"]
['off_platform']
"""

from .model import LABELS, Model, load
from .persist import ModelLoadError, ModelVersionWarning

__all__ = ["LABELS", "Model", "ModelLoadError", "ModelVersionWarning", "load", "score", "review"]

_default = None


def _default_model():
    global _default
    if _default is None:
        _default = load()
    return _default


def score(text_or_texts):
    """Score a text or a list of texts with the default model, loaded once."""
    return _default_model().score(text_or_texts)


def review(messages, approved=False, model=None):
    """Recommend approve, review or deny for one off-service contact request.

    See :func:`classifier.recommend.review`.
    """
    from .recommend import review as _review

    return _review(messages, approved=approved, model=model or _default_model())
