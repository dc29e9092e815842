"""Model files hold arrays, never code; every failure is one ModelLoadError."""

import json
import os
import shutil

import joblib
import numpy as np
import pytest

import classifier
from classifier.persist import ModelLoadError, ModelVersionWarning, sha256
from conftest import ROOT

DEFAULT = ROOT / "models" / "default"


@pytest.fixture
def copy(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(DEFAULT, d)
    return d


def _manifest(d):
    return json.loads((d / "manifest.json").read_text(encoding="utf-8"))


def _rehash(d):
    """Make the manifest match the model file, as an attacker who edits both would."""
    m = _manifest(d)
    m["model_sha256"] = sha256(d / "model.joblib")
    m["model_size"] = (d / "model.joblib").stat().st_size
    (d / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


class Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("compress", [0, 3], ids=["plain", "compressed"])
def test_a_malicious_pickle_is_refused_before_it_runs(copy, tmp_path, compress):
    marker = tmp_path / "pwned"
    joblib.dump({"coef": Exploit(marker)}, copy / "model.joblib", compress=compress)
    _rehash(copy)
    with pytest.raises(ModelLoadError, match="posix.system is not allowed|os.system is not allowed"):
        classifier.load(copy)
    assert not marker.exists()


def test_object_arrays_are_refused(copy):
    joblib.dump({"coef": np.array([Exploit("/nonexistent/x")], dtype=object)}, copy / "model.joblib")
    _rehash(copy)
    with pytest.raises(ModelLoadError, match="object arrays are not allowed|is not allowed"):
        classifier.load(copy)


def test_a_flipped_bit_is_caught(copy):
    data = bytearray((copy / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.joblib").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        classifier.load(copy)


def test_a_truncated_file_is_caught(copy):
    data = (copy / "model.joblib").read_bytes()
    (copy / "model.joblib").write_bytes(data[:1000])
    with pytest.raises(ModelLoadError, match="bytes, the manifest says"):
        classifier.load(copy)


def test_wrong_arrays_are_refused(copy):
    joblib.dump({"coef": np.zeros(3)}, copy / "model.joblib")
    _rehash(copy)
    with pytest.raises(ModelLoadError, match="expected the keys"):
        classifier.load(copy)


def test_nan_coefficients_are_refused(copy):
    from classifier.persist import _safe_load

    arrays = _safe_load(copy / "model.joblib")
    arrays["coef"][0, 0] = np.nan
    joblib.dump(arrays, copy / "model.joblib", compress=3)
    _rehash(copy)
    with pytest.raises(ModelLoadError, match="coef holds NaN"):
        classifier.load(copy)


def test_canary_drift_is_caught(copy):
    m = _manifest(copy)
    m["canaries"][0]["off_platform"] = 0.5 if m["canaries"][0]["off_platform"] > 0.6 else 0.9
    (copy / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="canary .* scores off_platform="):
        classifier.load(copy)


def test_other_library_versions_warn_naming_both(copy):
    m = _manifest(copy)
    m["versions"]["scikit-learn"] = "0.0.1"
    (copy / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.warns(ModelVersionWarning, match=r"scikit-learn 0\.0\.1 \(model\) vs .* \(installed\)"):
        classifier.load(copy)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("thresholds"), "lacks 'thresholds'"),
    (lambda m: m.update(format_version=99), "format_version 99"),
], ids=["no thresholds", "future format"])
def test_bad_manifests_are_refused(copy, edit, message):
    m = _manifest(copy)
    edit(m)
    (copy / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=message):
        classifier.load(copy)


def test_unreadable_manifest(copy):
    (copy / "manifest.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="not readable JSON"):
        classifier.load(copy)


def test_the_model_file_holds_only_arrays():
    from classifier.persist import _safe_load

    arrays = _safe_load(DEFAULT / "model.joblib")
    assert all(isinstance(v, np.ndarray) and not v.dtype.hasobject for v in arrays.values())


def test_training_never_leaves_a_half_written_model(tmp_path, monkeypatch):
    from classifier import training
    from test_train import FOREIGN, SMALL_GRID

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "off_platform": a, "peer_pressure": b}, ensure_ascii=False) + "\n"
                            for t, a, b in FOREIGN), encoding="utf-8")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(training, "save_model", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        training.train([data], tmp_path / "out", grid=SMALL_GRID, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]
