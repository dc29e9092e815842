import json
import shutil

from classifier.data import check_corpus, main
from conftest import ROOT


def test_the_corpus_checks_green(capsys):
    assert main(["check", str(ROOT / "data")]) == 0
    out = capsys.readouterr().out
    assert "test.jsonl" in out and "duplicates:" in out and "ERROR" not in out


def test_the_corpus_is_big_and_balanced_enough():
    rows = [json.loads(line) for p in (ROOT / "data" / "written").glob("*.jsonl") for line in p.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 3000
    share = {k: sum(r[k] for r in rows) / len(rows) for k in ("off_platform", "peer_pressure")}
    negatives = sum(not r["off_platform"] and not r["peer_pressure"] for r in rows) / len(rows)
    assert share["off_platform"] >= 0.3 and share["peer_pressure"] >= 0.15 and negatives >= 0.45


def test_a_leak_between_splits_is_an_error(tmp_path):
    shutil.copytree(ROOT / "data" / "train", tmp_path / "train")
    first = (ROOT / "data" / "train" / "written_e_adversarial.jsonl").read_text(encoding="utf-8").split("\n", 1)[0]
    leaked = json.loads(first)
    leaked["text"] = "　" + leaked["text"].replace("LINE", "ＬＩＮＥ")  # same after normalisation
    (tmp_path / "test.jsonl").write_text(json.dumps(leaked, ensure_ascii=False) + "\n", encoding="utf-8")
    report, errors = check_corpus(tmp_path)
    assert any("leak between splits" in e for e in errors)


def test_a_bad_label_is_an_error(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "a", "off_platform": 1, "peer_pressure": "yes"}\n', encoding="utf-8")
    assert main(["check", str(tmp_path)]) == 1
