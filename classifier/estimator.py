"""The model: one calibrated logistic regression per label, and the whole pipeline.

    texts -> TextReader -> TextFeatures -> CalibratedLinear

``build_pipeline()`` returns that unfitted scikit-learn ``Pipeline``; the
fitted one is what :class:`classifier.Model` scores with.
"""

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .features import TextFeatures, TextReader

__all__ = ["LABELS", "CalibratedLinear", "build_pipeline", "DEFAULT_PARAMS"]

from .labels import LABELS  # noqa: E402  (re-exported)

#: The hyper-parameters ``build_pipeline()`` uses unless told otherwise.
DEFAULT_PARAMS = {
    "features__word_ngram_max": 2,
    "features__char_ngram_range": (1, 3),
    "clf__C": 4.0,
    "clf__class_weight": "balanced",
}


class CalibratedLinear(ClassifierMixin, BaseEstimator):
    """A logistic regression per label with sigmoid-calibrated probabilities.

    Each label's model is ``CalibratedClassifierCV(LogisticRegression(...),
    method="sigmoid", ensemble=False)``: the regression is fitted on all rows
    and the sigmoid on its out-of-fold decision values, so a probability
    means what it says on messages the model has not seen.

    ``y`` may be 1-D (one label: ``predict_proba`` has the usual two
    columns) or 2-D (one column per label: ``predict_proba`` gives each
    label's probability, shape ``(n_samples, n_labels)``).

    Parameters
    ----------
    C : float
        Inverse regularisation strength.
    class_weight : {"balanced", None}
    calibrate : bool
        False gives plain logistic regressions (same ranking, uncalibrated
        probabilities): the hyper-parameter search uses it, since average
        precision does not depend on a monotone calibration.
    cv : int
        Folds for the calibration's out-of-fold decision values.
    tol : float
        Solver tolerance; small, so that the optimum reached does not depend
        on the machine's floating-point order.
    random_state : int
    """

    def __init__(self, *, C=4.0, class_weight="balanced", calibrate=True, cv=5, tol=1e-7, random_state=0):
        self.C = C
        self.class_weight = class_weight
        self.calibrate = calibrate
        self.cv = cv
        self.tol = tol
        self.random_state = random_state

    def _estimator(self):
        linear = LogisticRegression(C=self.C, class_weight=self.class_weight, solver="liblinear", tol=self.tol,
                                    max_iter=10_000, random_state=self.random_state)
        if not self.calibrate:
            return linear
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        return CalibratedClassifierCV(linear, method="sigmoid", cv=folds, ensemble=False)

    def fit(self, X, y, sample_weight=None):
        y = np.asarray(y)
        if y.ndim not in (1, 2) or not len(y):
            raise ValueError(f"y must be a non-empty 1-D or 2-D array of 0/1 labels, got shape {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("y must hold 0/1 labels only")
        Y = y.reshape(len(y), -1)
        for k in range(Y.shape[1]):
            if len(np.unique(Y[:, k])) < 2:
                raise ValueError(f"label column {k} has one class only; each label needs positives and negatives")
        self.n_labels_ = Y.shape[1] if y.ndim == 2 else None
        self.classes_ = np.arange(Y.shape[1]) if y.ndim == 2 else np.array([0, 1])
        self.estimators_ = [self._estimator().fit(X, Y[:, k], sample_weight=sample_weight) for k in range(Y.shape[1])]
        self._coef = self._ab = None
        return self

    def _linear(self, k):
        est = self.estimators_[k]
        return est.calibrated_classifiers_[0].estimator if self.calibrate else est

    @property
    def coef_(self):
        """Each label's coefficients, shape ``(n_labels, n_features)``, C-contiguous."""
        check_is_fitted(self, "estimators_")
        if getattr(self, "_coef", None) is None:
            self._coef = np.ascontiguousarray(np.vstack([self._linear(k).coef_[0] for k in range(len(self.estimators_))]))
        return self._coef

    @property
    def intercept_(self):
        check_is_fitted(self, "estimators_")
        return np.array([self._linear(k).intercept_[0] for k in range(len(self.estimators_))])

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_coef", None)
        state.pop("_ab", None)
        return state

    def _positive(self, X):
        if not self.calibrate:
            return np.column_stack([est.predict_proba(X)[:, 1] for est in self.estimators_])
        # What each CalibratedClassifierCV.predict_proba computes (its sigmoid of the regression's decision value),
        # for all labels in one product: the library's per-call input checks cost more than the arithmetic on one
        # message. tests/test_pipeline.py checks the two agree.
        coef_t, intercept, a, b = self._linear_parts()
        d = np.asarray(X @ coef_t) + intercept
        return expit(-(a * d + b))

    def _linear_parts(self):
        # Built once: scipy copies a non-contiguous dense operand on every product (coef_.T is one).
        if getattr(self, "_ab", None) is None:
            calibrators = [est.calibrated_classifiers_[0].calibrators[0] for est in self.estimators_]
            self._ab = (np.ascontiguousarray(self.coef_.T), self.intercept_,
                        np.array([c.a_ for c in calibrators]), np.array([c.b_ for c in calibrators]))
        return self._ab

    def predict_proba(self, X):
        check_is_fitted(self, "estimators_")
        p = self._positive(X)
        return p if self.n_labels_ else np.column_stack([1.0 - p[:, 0], p[:, 0]])

    def decision_function(self, X):
        check_is_fitted(self, "estimators_")
        d = np.column_stack([self._linear(k).decision_function(X) for k in range(len(self.estimators_))])
        return d if self.n_labels_ else d[:, 0]

    def predict(self, X):
        p = self._positive(X) >= 0.5
        return p.astype(int) if self.n_labels_ else p[:, 0].astype(int)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        return tags


def build_pipeline(params=None, *, random_state=0):
    """A fresh, unfitted pipeline; ``params`` as for ``Pipeline.set_params`` (default :data:`DEFAULT_PARAMS`)."""
    pipeline = Pipeline([
        ("read", TextReader()),
        ("features", TextFeatures()),
        ("clf", CalibratedLinear(random_state=random_state)),
    ])
    return pipeline.set_params(**{**DEFAULT_PARAMS, **(params or {})})
