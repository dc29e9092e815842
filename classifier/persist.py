"""Model files that hold arrays and plain data, never code.

A model directory holds ``model.joblib`` (a dict of numpy arrays, strings
and numbers) and ``manifest.json`` (its sha256 and size, library versions,
thresholds, metrics, canary messages). Loading checks the hash and size,
unpickles with an allowlist that admits numpy arrays and nothing else that
could run code, rebuilds the pipeline in code, and checks the canaries.
"""

import hashlib
import json
import os
import pickle
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

from .features import build_pipeline

__all__ = ["FORMAT_VERSION", "ModelLoadError", "ModelVersionWarning", "save_model", "load_model", "versions", "sha256"]

FORMAT_VERSION = 1
MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
_LIBRARIES = ("scikit-learn", "numpy", "fugashi", "unidic-lite")


class ModelLoadError(Exception):
    """A model directory that cannot be used, and why."""


class ModelVersionWarning(UserWarning):
    """The model was built with other library versions than the ones installed."""


def versions():
    """Installed versions of the libraries a model depends on."""
    return {name: metadata.version(name) for name in _LIBRARIES}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _arrays(pipeline):
    """The fitted pipeline as plain arrays."""
    union = pipeline.named_steps["features"]
    clf = pipeline.named_steps["clf"]
    out = {}
    for name, vec in union.transformer_list:
        terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
        out[f"{name}_vocabulary"] = np.array(terms, dtype=str)
        out[f"{name}_idf"] = vec.idf_.astype(np.float64)
    out["coef"] = clf.coef_.astype(np.float64)
    out["intercept"] = clf.intercept_.astype(np.float64)
    out["calibration"] = clf.calibration_.astype(np.float64)
    return out


def _rebuild(arrays, params):
    pipeline = build_pipeline(params)
    union = pipeline.named_steps["features"]
    for name, vec in union.transformer_list:
        terms = arrays[f"{name}_vocabulary"].tolist()
        vec.vocabulary_ = {t: i for i, t in enumerate(terms)}
        vec.idf_ = arrays[f"{name}_idf"]
    clf = pipeline.named_steps["clf"]
    clf.coef_ = arrays["coef"]
    clf.intercept_ = arrays["intercept"]
    clf.calibration_ = arrays["calibration"]
    n_features = sum(len(vec.vocabulary_) for _, vec in union.transformer_list)
    if clf.coef_.shape[1] != n_features:
        raise ModelLoadError(f"coefficients have {clf.coef_.shape[1]} columns for {n_features} features")
    return pipeline


def save_model(pipeline, directory, manifest):
    """Write ``model.joblib`` and ``manifest.json`` into an existing directory.

    ``manifest`` gets the file's hash, size, format version and library
    versions added; it must hold ``params`` (the pipeline's hyper-parameters).
    """
    import joblib

    directory = Path(directory)
    path = directory / MODEL_FILE
    joblib.dump(_arrays(pipeline), path, compress=3)
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "model_file": MODEL_FILE,
        "model_sha256": sha256(path),
        "model_size": path.stat().st_size,
        "versions": versions(),
    }
    with open(directory / MANIFEST_FILE, "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return manifest


class _SafeArrayWrapper(NumpyArrayWrapper):
    def read(self, unpickler, ensure_native_byte_order):
        # joblib reads object arrays with plain pickle.load: refuse them.
        if np.dtype(self.dtype).hasobject:
            raise pickle.UnpicklingError("object arrays are not allowed in a model file")
        return super().read(unpickler, ensure_native_byte_order)


class _SafeUnpickler(NumpyUnpickler):
    """Admits joblib's array wrapper and numpy dtypes; refuses everything else."""

    _ALLOWED = {
        ("joblib.numpy_pickle", "NumpyArrayWrapper"): _SafeArrayWrapper,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a model file") from None


def _safe_load(path):
    with open(path, "rb") as f:
        with _validate_fileobject_and_memmap(f, str(path), None) as (fobj, _):
            if isinstance(fobj, str):
                raise pickle.UnpicklingError("old joblib format")
            return _SafeUnpickler(str(path), fobj, ensure_native_byte_order=True).load()


def _check_payload(arrays):
    expected = {"words_vocabulary", "words_idf", "chars_vocabulary", "chars_idf", "coef", "intercept", "calibration"}
    if not isinstance(arrays, dict) or set(arrays) != expected:
        got = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
        raise ModelLoadError(f"model file holds {got}, expected the keys {sorted(expected)}")
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ModelLoadError(f"{key} is {type(value).__name__}, expected a numpy array")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ModelLoadError(f"{key} holds NaN or infinite values")


def load_model(directory):
    """Load and verify a model directory.

    Returns
    -------
    (Pipeline, dict)
        The rebuilt pipeline and the manifest.

    Raises
    ------
    ModelLoadError
        Missing files, a hash or size mismatch, a refused pickle, a format
        the code does not know, or inconsistent arrays.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelLoadError(f"{directory} is not a model directory: no {MANIFEST_FILE}")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{manifest_path} is not readable JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        got = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise ModelLoadError(f"{manifest_path}: format_version {got!r}, this code reads {FORMAT_VERSION}")
    for key in ("labels", "thresholds", "params", "model_sha256", "model_size"):
        if key not in manifest:
            raise ModelLoadError(f"{manifest_path} lacks {key!r}")
    path = directory / os.path.basename(manifest.get("model_file", MODEL_FILE))
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    size = path.stat().st_size
    if size != manifest["model_size"]:
        raise ModelLoadError(f"{path} has {size} bytes, the manifest says {manifest['model_size']}")
    digest = sha256(path)
    if digest != manifest["model_sha256"]:
        raise ModelLoadError(f"{path} has sha256 {digest}, the manifest says {manifest['model_sha256']}")
    try:
        arrays = _safe_load(path)
    except ModelLoadError:
        raise
    except Exception as e:  # a refused or corrupt pickle, whatever the unpickler raised
        raise ModelLoadError(f"{path} was refused: {e}") from None
    _check_payload(arrays)
    _check_versions(manifest)
    return _rebuild(arrays, manifest["params"]), manifest


def _check_versions(manifest):
    built = manifest.get("versions", {})
    mismatched = [f"{name} {built.get(name)} (model) vs {have} (installed)" for name, have in versions().items() if built.get(name) != have]
    if mismatched:
        warnings.warn(
            "model built with other library versions: " + "; ".join(mismatched) + ". Its canaries are checked; retrain with train.py if they fail.",
            ModelVersionWarning,
            stacklevel=3,
        )
