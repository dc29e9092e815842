import json
import shutil

from classifier.data import check_corpus, load_labelled, main, part_of
from classifier.normalize import normalize
from conftest import ROOT


def test_the_corpus_checks_green(capsys):
    assert main(["check", str(ROOT / "data")]) == 0
    out = capsys.readouterr().out
    assert "written/" in out and "duplicates:" in out and "ERROR" not in out


def test_the_corpus_is_big_and_balanced_enough():
    rows = [json.loads(line) for p in (ROOT / "data" / "written").glob("*.jsonl") for line in p.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 3000
    share = {k: sum(r[k] for r in rows) / len(rows) for k in ("off_platform", "peer_pressure")}
    negatives = sum(not r["off_platform"] and not r["peer_pressure"] for r in rows) / len(rows)
    assert share["off_platform"] >= 0.3 and share["peer_pressure"] >= 0.15 and negatives >= 0.45


def test_a_text_in_an_evaluation_set_never_trains(tmp_path):
    shutil.copytree(ROOT / "data" / "written", tmp_path / "written")
    (tmp_path / "eval").mkdir()
    rows = [json.loads(line) for line in (ROOT / "data" / "written" / "e_adversarial.jsonl").read_text(encoding="utf-8").splitlines()]
    leaked = next(r for r in rows if part_of("written", normalize(r["text"]).text) == "train")
    copy = {**leaked, "text": "　" + leaked["text"].replace("LINE", "ＬＩＮＥ")}  # same after normalisation
    (tmp_path / "eval" / "x.jsonl").write_text(json.dumps(copy, ensure_ascii=False) + "\n", encoding="utf-8")
    train, _ = load_labelled([tmp_path], part="train")
    assert normalize(leaked["text"]).text not in {r["_norm"] for r in train}
    report, errors = check_corpus(tmp_path)
    assert not errors and "1 texts both in a training file and a held-out part" in report


def test_the_split_is_derived_from_the_text_alone():
    rows, _ = load_labelled([ROOT / "data"], part="test")
    train, _ = load_labelled([ROOT / "data"], part="train")
    assert rows and not {r["_norm"] for r in rows} & {r["_norm"] for r in train}
    assert all(part_of("written", r["_norm"]) == "test" for r in rows if "/written/" in r["_where"])


def test_a_bad_label_is_an_error(tmp_path):
    (tmp_path / "written").mkdir()
    (tmp_path / "written" / "x.jsonl").write_text('{"text": "a", "off_platform": 1, "peer_pressure": "yes"}\n', encoding="utf-8")
    assert main(["check", str(tmp_path)]) == 1
