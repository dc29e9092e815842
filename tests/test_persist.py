"""Model files load without running code; every field is checked; every failure is one ModelLoadError."""

import json
import math
import os
import shutil
import warnings
import zipfile

import numpy as np
import pytest

import classifier
from classifier.errors import ClassifierError
from classifier.persist import ModelLoadError, ModelVersionWarning, sha256
from conftest import ROOT

DEFAULT = ROOT / "models" / "default"
MODEL = "model.skops"


@pytest.fixture
def copy(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(DEFAULT, d)
    return d


def _manifest(d):
    return json.loads((d / "manifest.json").read_text(encoding="utf-8"))


def _write_manifest(d, m):
    (d / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def _rehash(d):
    """Make the manifest match the model file, as an attacker who edits both would."""
    m = _manifest(d)
    m["model_sha256"] = sha256(d / MODEL)
    m["model_size"] = (d / MODEL).stat().st_size
    _write_manifest(d, m)


class Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_an_untrusted_type_is_refused_before_anything_is_built(copy, tmp_path):
    import skops.io

    marker = tmp_path / "pwned"
    skops.io.dump({"clf": Exploit(marker)}, copy / MODEL)
    _rehash(copy)
    with pytest.raises(ModelLoadError, match="does not trust"):
        classifier.load(copy)
    assert not marker.exists()


def test_a_pickle_in_place_of_the_model_is_refused(copy, tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    (copy / MODEL).write_bytes(pickle.dumps(Exploit(marker)))
    _rehash(copy)
    with pytest.raises(ModelLoadError, match="could not be read as a model"):
        classifier.load(copy)
    assert not marker.exists()


def test_arrays_are_read_without_pickle():
    with zipfile.ZipFile(DEFAULT / MODEL) as z:
        arrays = [name for name in z.namelist() if name.endswith(".npy")]
        assert arrays
        for name in arrays:
            with z.open(name) as f:
                np.load(f, allow_pickle=False)  # raises on an object array


def test_a_flipped_bit_is_caught(copy):
    data = bytearray((copy / MODEL).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / MODEL).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        classifier.load(copy)


def test_a_truncated_file_is_caught(copy):
    data = (copy / MODEL).read_bytes()
    (copy / MODEL).write_bytes(data[:1000])
    with pytest.raises(ModelLoadError, match="bytes, the manifest says"):
        classifier.load(copy)


def test_nan_coefficients_are_refused(copy):
    import skops.io

    from classifier.persist import TRUSTED

    with warnings.catch_warnings():  # (the oldest scikit-learn of the range warns on a newer model's file)
        warnings.simplefilter("ignore")
        pipeline = skops.io.load(copy / MODEL, trusted=TRUSTED)
    pipeline.named_steps["features"].word_idf_[0] = np.nan
    skops.io.dump(pipeline, copy / MODEL)
    _rehash(copy)
    with pytest.raises(ModelLoadError, match="NaN or infinite"):
        classifier.load(copy)


def test_canary_drift_is_caught(copy):
    m = _manifest(copy)
    m["canaries"][0]["off_platform"] = 0.5 if m["canaries"][0]["off_platform"] > 0.6 else 0.9
    _write_manifest(copy, m)
    with pytest.raises(ModelLoadError, match="canary .* scores off_platform="):
        classifier.load(copy)


def test_a_library_outside_the_tested_range_warns(copy, monkeypatch):
    from classifier import persist

    monkeypatch.setitem(persist.TESTED, "numpy", "<1")
    with pytest.warns(ModelVersionWarning, match=r"numpy .* \(tested: <1\)"):
        classifier.load(copy)


def test_the_model_built_elsewhere_still_loads_in_range(copy):
    m = _manifest(copy)
    m["versions"]["scikit-learn"] = "1.6.0"  # another version in the range: no warning, canaries decide
    _write_manifest(copy, m)
    classifier.load(copy)


BAD_MANIFESTS = [
    (lambda m: m["thresholds"].update(off_platform=math.nan), "thresholds.off_platform is nan"),
    (lambda m: m["thresholds"].update(off_platform=2.0), "thresholds.off_platform is 2.0"),
    (lambda m: m["thresholds"].update(peer_pressure=-1), "thresholds.peer_pressure is -1"),
    (lambda m: m["thresholds"].update(peer_pressure="0.5"), "thresholds.peer_pressure is '0.5'"),
    (lambda m: m["thresholds"].pop("off_platform"), "manifest field thresholds is"),
    (lambda m: m.pop("thresholds"), "manifest field thresholds is None"),
    (lambda m: m.pop("review_lower"), "manifest field review_lower is None"),
    (lambda m: m["review_lower"].update(off_platform=0.99999), "review_lower.off_platform is above"),
    (lambda m: m.update(canaries=[]), "canaries is \\[\\], expected a non-empty list"),
    (lambda m: m.update(canaries=[{"text": 1}]), "canaries\\[0\\]"),
    (lambda m: m["canaries"][0].update(off_platform=None), "canaries\\[0\\].off_platform is None"),
    (lambda m: m.update(labels=["off_platform"]), "manifest field labels"),
    (lambda m: m.update(format_version=99), "format_version is 99"),
    (lambda m: m.update(model_file="../../etc/passwd"), "model_file"),
    (lambda m: m.update(model_sha256=12), "model_sha256 is 12"),
    (lambda m: m.update(model_size="big"), "model_size is 'big'"),
    (lambda m: m["conversation_rule"].update(deny_at=math.inf), "conversation_rule.deny_at is inf"),
    (lambda m: m.update(conversation_rule=[]), "conversation_rule is list"),
    (lambda m: m["conversation_rule"].update(approve_below=0.999, deny_at=0.5), "approve_below .* is above deny_at"),
]


@pytest.mark.parametrize("edit, message", BAD_MANIFESTS, ids=[m for _, m in BAD_MANIFESTS])
def test_every_manifest_field_is_checked(copy, edit, message):
    m = _manifest(copy)
    edit(m)
    # json writes NaN and Infinity as bare words, as a hand-edited manifest might hold them.
    (copy / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=message) as exc:
        classifier.load(copy)
    assert isinstance(exc.value, ClassifierError)


@pytest.mark.parametrize("text", ["{nope", "[]", "null", "[" * 100_000], ids=["broken", "list", "null", "deep"])
def test_unreadable_manifest(copy, text):
    (copy / "manifest.json").write_text(text, encoding="utf-8")
    with pytest.raises(ModelLoadError):
        classifier.load(copy)


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


def test_replacing_a_directory_never_leaves_it_missing(tmp_path):
    from classifier.fsutil import recover_dir, replace_dir

    target, new = tmp_path / "default", tmp_path / "new"
    target.mkdir()
    (target / "v").write_text("old")
    new.mkdir()
    (new / "v").write_text("new")
    replace_dir(new, target, keep=tmp_path / "previous")
    assert (target / "v").read_text() == "new" and (tmp_path / "previous" / "v").read_text() == "old"
    # A crash between two renames (where the exchange is not available) is recovered.
    os.rename(target, tmp_path / ".default.old")
    assert recover_dir(target) and (target / "v").read_text() == "new"
