"""One scoring path: the fitted scikit-learn Pipeline is what scores, and what training measured."""

import json
import threading

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone, is_classifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import cross_val_score

import classifier
from classifier.features import TextFeatures, TextReader, word_analyzer
from classifier.training import choose_threshold, review_edge
from conftest import ON_PLATFORM, ROOT
from test_train import FOREIGN

SCAM = "LINEのIDを送るのでそちらで詳しくお話ししましょう。他の方はもう追加済みです。"


def _long(n):
    filler = "本日は晴天なり。記事の構成について確認します。"
    return (filler * (n // len(filler) + 1))[: max(n - len(SCAM), 0)] + SCAM if n >= len(SCAM) else SCAM[:n]


LENGTHS = [0, 1, 40, 999, 1000, 1001, 2186, 10_000, 120_000, 300_000]


def test_predict_proba_is_the_pipelines_on_texts_of_every_length(model):
    texts = [_long(n) for n in LENGTHS] + ON_PLATFORM
    assert [len(t) for t in texts[: len(LENGTHS)]] == LENGTHS
    got = model.predict_proba(texts)
    assert np.array_equal(got, model.pipeline.predict_proba(texts))
    # score() runs the same steps one by one.
    scored = model.score(texts, evidence=False)
    assert np.allclose([[r[k] for k in classifier.LABELS] for r in scored], got, atol=1e-6)


def _docs(texts):
    return TextReader().transform(texts)


def test_fast_features_equal_scikit_learns_vectorizers():
    texts = [t for t, _, _ in FOREIGN] + ON_PLATFORM + ["ｌｉｎｅ  ＩＤ\n\nは  taro_01", "  ", "a"]
    docs = _docs(texts)
    features = TextFeatures(char_ngram_range=(1, 3)).fit(docs)
    words = TfidfVectorizer(analyzer=word_analyzer(2), sublinear_tf=True, min_df=2, lowercase=False).fit(docs)
    chars = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2, lowercase=False).fit(
        [d.text for d in docs])
    reference = sp.hstack([words.transform(docs), chars.transform([d.text for d in docs])]).tocsr()
    got = features.transform(docs)
    assert got.shape == reference.shape
    assert abs(got - reference).max() < 1e-12
    assert list(features.words_) == sorted(words.vocabulary_, key=words.vocabulary_.get)


def test_the_pipeline_is_a_scikit_learn_classifier(model):
    assert is_classifier(model.pipeline)
    assert list(model.pipeline.named_steps) == ["read", "features", "clf"]


@pytest.fixture(scope="module")
def foreign():
    texts = [t for t, _, _ in FOREIGN] * 3
    Y = np.array([[a, b] for _, a, b in FOREIGN] * 3)
    return texts, Y


def test_clone_fits_a_foreign_labelled_file(model, foreign):
    texts, Y = foreign
    fitted = clone(model.pipeline).fit(texts, Y)
    p = fitted.predict_proba(["LINEでやり取りしましょう、IDはtaro_01です", "納品ありがとうございました"])
    assert p.shape == (2, 2) and p[0, 0] > p[1, 0]


@pytest.mark.parametrize("column", [0, 1, None], ids=["off_platform", "peer_pressure", "both"])
def test_cross_val_score_takes_one_label_or_both(model, foreign, column):
    texts, Y = foreign
    y = Y if column is None else Y[:, column]
    scores = cross_val_score(clone(model.pipeline), texts, y, cv=3)
    assert len(scores) == 3 and np.all((0 <= scores) & (scores <= 1))


def test_thresholds_are_what_the_shipped_pipelines_out_of_fold_probabilities_give(model):
    m = model.manifest
    oof = m["cv"]["out_of_fold"]
    p, y, real = np.array(oof["probabilities"]), np.array(oof["labels"]), np.array(oof["real"], dtype=bool)
    for k, label in enumerate(classifier.LABELS):
        t, _ = choose_threshold(y[:, k], p[:, k], p[real, k] if real.any() else None,
                                precision=m["operating_point"]["target_precision"],
                                real_rate=m["operating_point"]["real_chat_rate"])
        assert t == pytest.approx(model.thresholds[label], abs=1e-7)
        assert review_edge(y[:, k], p[:, k], t) == pytest.approx(model.review_lower[label], abs=1e-7)


def test_out_of_fold_probabilities_come_from_the_shipped_pipeline(tmp_path):
    """Retrain a small model and recompute its stored out-of-fold probabilities with a clone of what it ships."""
    from sklearn.model_selection import cross_val_predict

    from classifier.augment import augment
    from classifier.training import _folds, _writer_groups, train
    from conftest import write_jsonl

    rows = [{"text": t, "off_platform": a, "peer_pressure": b} for t, a, b in FOREIGN]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    grid = {"clf__C": [4.0], "features__char_ngram_range": [(1, 3)], "clf__class_weight": ["balanced"]}
    train([data], tmp_path / "m", grid=grid, progress=False, n_jobs=1)
    shipped = classifier.load(tmp_path / "m")
    texts = [r["text"] for r in rows]
    variants = augment(texts, seed=0)
    src = [i for i, _, _ in variants]
    Y = np.array([[r["off_platform"], r["peer_pressure"]] for r in rows])
    aug_Y, groups = np.vstack([Y, Y[src]]), _writer_groups(rows)
    groups = np.concatenate([groups, groups[src]])
    docs = TextReader().transform(texts + [t for _, _, t in variants])
    oof = cross_val_predict(clone(shipped.pipeline)[1:], docs, aug_Y, cv=_folds(aug_Y, groups, 5, 0), method="predict_proba")
    stored = np.array(shipped.manifest["cv"]["out_of_fold"]["probabilities"])
    assert np.allclose(oof[: len(texts)], stored, atol=1e-6)


def test_the_default_model_loads_once_for_many_threads(monkeypatch):
    from classifier import model as model_module

    calls = []
    real_load = model_module.load
    monkeypatch.setattr(model_module, "_default", None)
    monkeypatch.setattr(model_module, "load", lambda *a: calls.append(1) or real_load(*a))
    out = [None] * 8
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, classifier.score(SCAM))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(o == out[0] for o in out)


def test_manifest_records_what_the_card_says(model):
    card = (ROOT / "models" / "default" / "MODEL_CARD.md").read_text(encoding="utf-8")
    for label in classifier.LABELS:
        assert f"{model.thresholds[label]:.4f}" in card
    assert json.loads((ROOT / "models" / "default" / "manifest.json").read_text(encoding="utf-8"))["format_version"] == 2


def test_the_calibrated_probabilities_are_scikit_learns(model):
    clf = model.pipeline.named_steps["clf"]
    X = model.pipeline[:-1].transform([t for t, _, _ in FOREIGN] + ON_PLATFORM)
    library = np.column_stack([est.predict_proba(X)[:, 1] for est in clf.estimators_])
    assert np.allclose(clf.predict_proba(X), library, rtol=0, atol=1e-12)
