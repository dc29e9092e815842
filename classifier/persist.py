"""Model files that load without running code.

A model directory holds ``model.skops`` (the fitted pipeline in skops's
format: a zip of JSON and ``.npy`` arrays read with ``allow_pickle=False``),
``manifest.json`` (the file's sha256 and size, library versions, thresholds,
metrics, canary messages) and ``MODEL_CARD.md``. Loading checks every
manifest field, the hash and the size, refuses a file that holds any type
outside :data:`TRUSTED`, and only then builds the pipeline.
"""

import hashlib
import json
import math
import os
import warnings
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .errors import ModelLoadError, ModelVersionWarning
from .labels import LABELS

__all__ = ["FORMAT_VERSION", "TRUSTED", "TESTED", "save_model", "load_model", "check_manifest", "versions", "sha256"]

FORMAT_VERSION = 2
MODEL_FILE = "model.skops"
MANIFEST_FILE = "manifest.json"

#: Types a model file may hold beyond those skops trusts by default. Anything
#: else is refused before the file is built.
TRUSTED = [
    "builtins.NoneType",  # (skops names None's type on some versions)
    "classifier.estimator.CalibratedLinear",
    "classifier.features.TextFeatures",
    "classifier.features.TextReader",
    "classifier.features._WordAnalyzer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
]

#: The library versions the project is tested with (as pyproject.toml says).
#: Outside them a load warns; the canaries decide whether the model is usable.
TESTED = {
    "scikit-learn": ">=1.6,<2",
    "numpy": ">=2,<3",
    "scipy": ">=1.13,<2",
    "fugashi": ">=1.3,<2",
    "unidic-lite": "==1.0.8",
    "skops": ">=0.11,<1",
}


def versions():
    """Installed versions of the libraries a model depends on."""
    return {name: metadata.version(name) for name in TESTED}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(pipeline, directory, manifest):
    """Write ``model.skops`` and ``manifest.json`` into an existing directory, fsynced.

    Returns the manifest with the file's hash, size, format version and
    library versions added.
    """
    import skops.io

    directory = Path(directory)
    path = directory / MODEL_FILE
    skops.io.dump(pipeline, path)
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "model_file": MODEL_FILE,
        "model_sha256": sha256(path),
        "model_size": path.stat().st_size,
        "versions": versions(),
    }
    check_manifest(manifest)
    _write_synced(directory / MANIFEST_FILE, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return manifest


def _write_synced(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _probability(value, where, *, open_interval=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and ((0 < value < 1) if open_interval else (0 <= value <= 1))
    if not ok:
        allowed = "a finite number in (0, 1)" if open_interval else "a number in [0, 1]"
        raise ModelLoadError(f"manifest field {where} is {value!r}, expected {allowed}")
    return float(value)


def check_manifest(manifest):
    """Type- and range-check every manifest field a model's behaviour depends on.

    Raises
    ------
    ModelLoadError
        Naming the field, what it holds and what is allowed.
    """
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"manifest is {type(manifest).__name__}, expected a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"manifest field format_version is {manifest.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    if manifest.get("labels") != list(LABELS):
        raise ModelLoadError(f"manifest field labels is {manifest.get('labels')!r}, expected {list(LABELS)}")
    for field in ("thresholds", "review_lower"):
        values = manifest.get(field)
        if not isinstance(values, dict) or set(values) != set(LABELS):
            raise ModelLoadError(f"manifest field {field} is {values!r}, expected one number per label {list(LABELS)}")
        for label in LABELS:
            _probability(values[label], f"{field}.{label}", open_interval=True)
    for label in LABELS:
        if manifest["review_lower"][label] > manifest["thresholds"][label]:
            raise ModelLoadError(f"manifest field review_lower.{label} is above thresholds.{label}")
    if not isinstance(manifest.get("model_file"), str) or os.path.basename(manifest["model_file"]) != manifest["model_file"]:
        raise ModelLoadError(f"manifest field model_file is {manifest.get('model_file')!r}, expected a file name")
    digest = manifest.get("model_sha256")
    if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ModelLoadError(f"manifest field model_sha256 is {digest!r}, expected 64 hex digits")
    size = manifest.get("model_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ModelLoadError(f"manifest field model_size is {size!r}, expected a positive integer")
    canaries = manifest.get("canaries")
    if not isinstance(canaries, list) or not canaries:
        raise ModelLoadError(f"manifest field canaries is {canaries!r}, expected a non-empty list (they check the model scores as built)")
    for i, canary in enumerate(canaries):
        if not isinstance(canary, dict) or not isinstance(canary.get("text"), str):
            raise ModelLoadError(f"manifest field canaries[{i}] is {canary!r}, expected an object with a text")
        for label in LABELS:
            _probability(canary.get(label), f"canaries[{i}].{label}")
    if manifest.get("conversation_rule") is not None:
        _check_rule(manifest["conversation_rule"])
    return manifest


def _check_rule(rule):
    where = "manifest field conversation_rule"
    if not isinstance(rule, dict):
        raise ModelLoadError(f"{where} is {type(rule).__name__}, expected an object")
    deny = _probability(rule.get("deny_at"), "conversation_rule.deny_at", open_interval=True)
    approve = _probability(rule.get("approve_below"), "conversation_rule.approve_below", open_interval=True)
    if approve > deny:
        raise ModelLoadError(f"{where}: approve_below {approve} is above deny_at {deny}")


def load_model(directory):
    """Load and verify a model directory.

    Returns
    -------
    (Pipeline, dict)
        The fitted pipeline and the manifest.

    Raises
    ------
    ModelLoadError
        Missing files, a malformed manifest, a hash or size mismatch, a type
        outside :data:`TRUSTED`, or a pipeline that is not what scoring needs.
    """
    import skops.io

    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelLoadError(f"{directory} is not a model directory: no {MANIFEST_FILE}")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f, parse_constant=lambda c: float(c))
    except (OSError, ValueError, RecursionError) as e:
        raise ModelLoadError(f"{manifest_path} is not readable JSON: {e}") from None
    check_manifest(manifest)
    path = directory / manifest["model_file"]
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    size = path.stat().st_size
    if size != manifest["model_size"]:
        raise ModelLoadError(f"{path} has {size} bytes, the manifest says {manifest['model_size']}")
    digest = sha256(path)
    if digest != manifest["model_sha256"]:
        raise ModelLoadError(f"{path} has sha256 {digest}, the manifest says {manifest['model_sha256']}")
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        # skops audits every type in the file against ``trusted`` before it builds anything.
        with warnings.catch_warnings():
            # scikit-learn warns on any version other than the one that saved the model; here the
            # tested range (_check_versions) and the canaries decide instead.
            from sklearn.exceptions import InconsistentVersionWarning

            warnings.simplefilter("ignore", InconsistentVersionWarning)
            pipeline = skops.io.load(path, trusted=TRUSTED)
    except UntrustedTypesFoundException as e:
        raise ModelLoadError(f"{path} holds types this code does not trust: {e}") from None
    except Exception as e:  # a corrupt or foreign file, whatever skops raised
        raise ModelLoadError(f"{path} could not be read as a model: {type(e).__name__}: {e}") from None
    _check_pipeline(pipeline, path)
    _check_versions()
    return pipeline, manifest


def _check_pipeline(pipeline, path):
    import numpy as np
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    from .estimator import CalibratedLinear
    from .features import TextFeatures, TextReader

    if not isinstance(pipeline, Pipeline) or not is_classifier(pipeline):
        raise ModelLoadError(f"{path} holds {type(pipeline).__name__}, expected a classifier Pipeline")
    steps = dict(pipeline.steps)
    expected = {"read": TextReader, "features": TextFeatures, "clf": CalibratedLinear}
    for name, kind in expected.items():
        if not isinstance(steps.get(name), kind):
            raise ModelLoadError(f"{path}: step {name!r} is {type(steps.get(name)).__name__}, expected {kind.__name__}")
    features, clf = steps["features"], steps["clf"]
    try:
        coef = clf.coef_
        width = len(features.words_) + len(features.chars_)
        ok = coef.shape == (len(LABELS), width) and len(features.word_idf_) == len(features.words_) \
            and len(features.char_idf_) == len(features.chars_)
        finite = all(np.isfinite(a).all() for a in (coef, clf.intercept_, features.word_idf_, features.char_idf_))
    except Exception as e:
        raise ModelLoadError(f"{path}: the pipeline is not fitted as expected: {type(e).__name__}: {e}") from None
    if not ok:
        raise ModelLoadError(f"{path}: coefficients of shape {coef.shape} do not fit {len(LABELS)} labels × {width} features")
    if not finite:
        raise ModelLoadError(f"{path}: the model holds NaN or infinite numbers")


def _check_versions():
    outside = [f"{name} {have} (tested: {TESTED[name]})" for name, have in versions().items()
               if Version(have) not in SpecifierSet(TESTED[name])]
    if outside:
        warnings.warn("installed libraries outside the tested range: " + "; ".join(outside)
                      + ". The model's canaries are checked at load; retrain with `python -m classifier train` if they fail.",
                      ModelVersionWarning, stacklevel=3)
