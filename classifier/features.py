"""The scikit-learn pipeline: normalise, TF-IDF words and characters, linear model.

    texts -> Normalizer -> FeatureUnion(words: TF-IDF over lemma n-grams,
                                        chars: TF-IDF over character n-grams)
          -> CalibratedLinear (one logistic regression per label, Platt-scaled)
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils.validation import check_is_fitted

from .normalize import normalize
from .tokenize import Tokenizer

__all__ = ["DEFAULT_PARAMS", "Normalizer", "CalibratedLinear", "build_pipeline"]

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
