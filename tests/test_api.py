import numpy as np
import pytest

import classifier
from conftest import ON_PLATFORM, SEED_QUOTES


def test_labels():
    assert classifier.LABELS == ("off_platform", "peer_pressure")


def test_predict_proba_shape_and_range(model):
    p = model.predict_proba(["LINEで話しましょう", "ありがとうございます", ""])
    assert p.shape == (3, 2)
    assert ((p >= 0) & (p <= 1)).all()


def test_predict_proba_empty_list(model):
    assert model.predict_proba([]).shape == (0, 2)


def test_predict_proba_refuses_a_bare_string(model):
    with pytest.raises(TypeError, match="expects a list of texts, got a single str"):
        model.predict_proba("LINEで話しましょう")


@pytest.mark.parametrize("bad", [None, 3, float("nan"), b"LINE", {"text": "x"}], ids=["None", "int", "NaN", "bytes", "dict"])
def test_score_names_the_bad_position(model, bad):
    with pytest.raises(TypeError, match=f"position 1 is {type(bad).__name__}"):
        model.score(["ok", bad])


def test_score_one_text_gives_one_dict(model):
    r = model.score("LINEのIDを送りますので、そちらで詳しくお話ししましょう")
    assert set(r) == {"off_platform", "peer_pressure", "flagged", "uncertain", "evidence"}
    assert r["flagged"] == [label for label in classifier.LABELS if r[label] >= model.thresholds[label]]


def test_score_list_keeps_order(model):
    texts = ["納品しました", "LINE IDは taro_0000 です。追加してください", "ありがとうございました"]
    results = model.score(texts)
    assert [r["off_platform"] for r in results] == [model.score(t)["off_platform"] for t in texts]


@pytest.mark.parametrize("quote, labels", SEED_QUOTES.items(), ids=range(len(SEED_QUOTES)))
def test_seed_quotes_are_flagged(model, quote, labels):
    assert set(labels) <= set(model.score(quote)["flagged"])


@pytest.mark.parametrize("text", ON_PLATFORM)
def test_on_platform_messages_are_not_flagged(model, text):
    assert model.score(text)["flagged"] == []


@pytest.mark.parametrize("text", ["", "   ", "\n\t"], ids=["empty", "spaces", "whitespace"])
def test_empty_scores_low(model, text):
    r = model.score(text)
    assert r["flagged"] == [] and r["evidence"] == []


def test_evidence_spans_index_the_original(model):
    text = "お世話になります。詳しくは ＬＩＮＥ で。ＩＤは ｔａｒｏ＿０００ です！"
    r = model.score(text)
    assert "off_platform" in r["flagged"]
    assert r["evidence"]
    for e in r["evidence"]:
        assert text[e["start"]:e["end"]] == e["text"]
        assert e["weight"] > 0 and e["label"] in r["flagged"]
    assert any("ＩＤ" in e["text"] or "ＬＩＮＥ" in e["text"] or "ｔａｒｏ" in e["text"] for e in r["evidence"])


def test_module_score_uses_the_default_model(model):
    text = "他のライターさんはもうChatworkに移っていますよ"
    assert classifier.score(text) == model.score(text)
    assert classifier.score([text]) == [model.score(text)]


def test_load_another_directory(tmp_path):
    with pytest.raises(classifier.ModelLoadError, match="not a model directory"):
        classifier.load(tmp_path)


def test_predictions_are_deterministic(model):
    texts = ["ラインでやり取りしましょう"] * 3
    p = model.predict_proba(texts)
    assert np.allclose(p, p[0])
