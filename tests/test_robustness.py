"""Hostile input: every text scores, in bounded time, without crashing the process."""

import multiprocessing
import subprocess
import sys
import threading
import time
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import classifier
from classifier.normalize import normalize
from conftest import ROOT

SCAM = "LINEで連絡ください。IDは taro_0000 です"

# Each is a disguise of SCAM that must score as SCAM does (zero-width, NUL, bidi...).
SAME_AS_SCAM = {
    "NUL prefix": "\x00" + SCAM,
    "NUL inside": "LINE\x00で連絡ください。IDは taro_0000 です",
    "zero-width in keyword": "L\u200bI\u200bN\u200bEで連絡ください。IDは taro_0000 です",
    "bidi override": "\u202eLINE\u202cで連絡ください。IDは taro_0000 です",
    "BOM and word joiner": "\ufeffLI\u2060NEで連絡ください。IDは taro_0000 です",
    "variation selectors": "L\ufe0fINE\U000e0100で連絡ください。IDは taro_0000 です",
    "C0 and C1 controls": "LINE\x07で\x9b連絡ください。IDは taro_0000\x1b です",
    "tag characters": "LINE\U000e0041\U000e0042で連絡ください。IDは taro_0000 です",
}


@pytest.mark.parametrize("text", SAME_AS_SCAM.values(), ids=SAME_AS_SCAM.keys())
def test_invisible_characters_change_nothing(model, text):
    assert np.allclose(model.predict_proba([text]), model.predict_proba([SCAM]), atol=1e-9)


DISGUISED = {
    "full-width": "ＬＩＮＥで連絡ください。ＩＤは ｔａｒｏ＿００００ です",
    "circled letters": "ⓁⒾⓃⒺで連絡ください。IDは taro_0000 です",
    "math letters": "𝐋𝐈𝐍𝐄で連絡ください。IDは taro_0000 です",
    "Cyrillic look-alikes": "LІNЕで連絡ください。IDは taro_0000 です",
    "spaced": "L I N E で連絡ください。IDは taro_0000 です",
    "dotted": "L.I.N.Eで連絡ください。IDは taro_0000 です",
    "emoji-separated": "L🍀I🍀N🍀Eで連絡ください。IDは taro_0000 です",
    "kanji phone": "電話で話しましょう。〇九〇の〇〇〇〇の一二三四までお願いします",
    "kana phone": "電話で話しましょう。ぜろきゅうぜろ ぜろぜろぜろぜろ いちにさんよん までお願いします",
}


@pytest.mark.parametrize("text", DISGUISED.values(), ids=DISGUISED.keys())
def test_disguises_are_flagged(model, text):
    assert "off_platform" in model.score(text)["flagged"]


HOSTILE = {
    "lone surrogates": "\ud800LINE\udfffで",
    "U+2028 and U+2029": "一行目\u2028二行目\u2029三行目",
    "combining marks x100k": "a" + "\u0301" * 100_000,
    "ZWJ emoji": "👩\u200d👩\u200d👧\u200d👦 LINE",
    "100k digits": "1" * 100_000,
    "100k Latin": "a" * 100_000,
    "100k emoji": "😀" * 100_000,
    "U+FDFA x100k": "\ufdfa" * 100_000,
    "1 MB": ("あいうえお、LINEで。" * 100_000)[:1_000_000],
    "2M characters": "か" * 2_000_000,
    "10 MB": "x" * 10_000_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_text_scores_in_bounded_time(model, text):
    started = time.monotonic()
    r = model.score(text)
    assert 0 <= r["off_platform"] <= 1 and 0 <= r["peer_pressure"] <= 1
    for e in r["evidence"]:
        assert text[e["start"]:e["end"]] == e["text"]
    assert time.monotonic() - started < 60


def test_a_million_character_scam_is_still_caught(model):
    text = "あ" * 1_000_000 + "。詳しくはLINEで。IDは taro_0000 です"
    assert "off_platform" in model.score(text)["flagged"]


def test_mecab_killers_run_in_a_child_process_without_crashing():
    # These inputs crash MeCab when fed whole (segmentation fault): prove the
    # process survives them, in a child so a regression cannot kill pytest.
    code = (
        "import classifier; m = classifier.load();"
        "[m.score(t) for t in ('1' * 300_000, 'あ' * 1_000_000, 'z' * 600_000)]; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_voicing_mark_and_nfkc_expansion_are_handled():
    assert normalize("ら゛いん").text != "" and normalize("か゛").text == "が"


# --- concurrency --------------------------------------------------------------

TEXTS = ["LINEで話そう", "他の人はもう始めています", "納品しました", "ＩＤは abc_123", "", "手数料がもったいないので直接で"] * 10


def test_eight_threads_equal_serial(model):
    serial = model.predict_proba(TEXTS)
    results = [None] * 8

    def work(i):
        results[i] = model.predict_proba(TEXTS)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert np.array_equal(r, serial)


def _score_in_child(texts):
    return classifier.load().predict_proba(texts)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_model_works_in_worker_processes(model, method):
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        results = pool.map(_score_in_child, [TEXTS, TEXTS])
    for r in results:
        assert np.allclose(r, model.predict_proba(TEXTS))


def test_the_model_pickles_and_scores_the_same(model):
    import pickle

    clone = pickle.loads(pickle.dumps(model.pipeline))
    assert np.array_equal(clone.predict_proba(TEXTS), model.predict_proba(TEXTS))


# --- properties -----------------------------------------------------------------

# Hypothesis leaves surrogates out of text() by default: put them back in.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200) | st.lists(
    st.sampled_from(["\ud800", "\udfff", "\x00", "\u200b", "L", "I", "N", "E", " ", "@", "．", "0", "〇", "ら", "い", "ん", "゛", "\ufdfa", "\u0301", "\n", "<email>"]),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_any_text_scores_in_range_with_valid_spans(model, text):
    r = model.score(text)
    assert 0 <= r["off_platform"] <= 1 and 0 <= r["peer_pressure"] <= 1
    for e in r["evidence"]:
        assert 0 <= e["start"] <= e["end"] <= len(text)
        assert text[e["start"]:e["end"]] == e["text"]


@settings(max_examples=500, deadline=None)
@given(ANY_TEXT)
def test_normalisation_is_idempotent(text):
    once = normalize(text).text
    assert normalize(once).text == once


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_offset_map_stays_inside_the_original(text):
    n = normalize(text)
    assert len(n.starts) == len(n.ends) == len(n.text)
    assert all(0 <= a <= b <= len(text) for a, b in zip(n.starts, n.ends))
    assert all(unicodedata.category(c) not in ("Cs", "Cc") or c == "\n" for c in n.text)


LINES = st.sampled_from([
    b'{"id": 1, "text": "LINE\\u3067"}', b"{broken", b"[1, 2]", b'{"text": null}', b'{"text": 5}', b'{"text": ""}',
    b'{"text": "\\ud800"}', b"\xff\xfe", b"", b"   ", b'{"no_text": 1}', b'"just a string"', b'{"text": "\xe3\x81\x82\r"}',
    b'{"text": "a\xe2\x80\xa8b"}', b"\xef\xbb\xbf{}", b'{"text": NaN}',
])


@settings(max_examples=100, deadline=None)
@given(st.lists(LINES, max_size=30))
def test_batch_output_has_one_row_per_input_row(model, tmp_path_factory, lines):
    from classifier import batch

    path = tmp_path_factory.mktemp("prop") / "log.jsonl"
    path.write_bytes(b"\n".join(lines))
    stats = {}
    rows = list(batch.read_rows([str(path)], stats=stats))
    out = batch.score_rows(model, rows)
    physical = path.read_bytes().split(b"\n")
    if physical[-1] == b"":
        physical.pop()
    non_blank = [line for line in physical if line.strip(b" \t\r\n\xef\xbb\xbf")]
    assert len(out) == len(rows) == len(non_blank)
    assert stats["blank"] == len(physical) - len(non_blank)
    summary = batch.Summary()
    summary.add(out)
    assert summary.read == summary.scored + summary.errors
