"""The moderators' loop: evaluate, compare before replacing, promote or refuse, roll back, learn from decisions.

Every model here is trained on the small FOREIGN set in a temporary directory;
models/default is never touched (checked at the end of the module).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import classifier
from classifier.normalize import normalize
from classifier.cli import main, train_main
from classifier.compare import PromotionError, PromotionRefused, compare, comparison_markdown, previous_path, promote, rollback
from classifier.data import DataError, load_labelled, part_of
from classifier.evaluate import evaluate, format_evaluation
from classifier.feedback import FeedbackFile, apply_feedback
from classifier.persist import ModelLoadError, sha256
from classifier.training import metrics_at, train
from conftest import ROOT, write_jsonl
from test_train import FOREIGN, SMALL_GRID

# Held out from FOREIGN: new wordings of the same three kinds of message.
EVAL = [
    ("LINEのIDを教えてください、そちらで連絡します", 1, 0),
    ("直接契約にすれば手数料がかかりません", 1, 0),
    ("メールアドレスに直接送ってください taro@example.com", 1, 0),
    ("Chatworkでやり取りしましょう", 1, 0),
    ("電話番号を教えてください", 1, 0),
    ("Discordに招待しますね", 1, 0),
    ("みんなやってるので大丈夫ですよ", 0, 1),
    ("他のライターさんはもう納品しています", 0, 1),
    ("規約上は問題ないので安心してください", 0, 1),
    ("ほとんどの人がもう了承しています", 0, 1),
    ("あなた以外は全員終わっていますよ", 0, 1),
    ("承認は形だけなので気にしないで", 0, 1),
    ("みんなLINEでやってるので問題ありません", 1, 1),
    ("納品物を確認しました", 0, 0),
    ("修正をお願いいたします", 0, 0),
    ("仮払いを行いました", 0, 0),
    ("明後日までにお願いします", 0, 0),
    ("LINEスタンプの追加制作をお願いします", 0, 0),
    ("画像を3枚添付します", 0, 0),
    ("よろしくお願いします", 0, 0),
]

# A deliberately worse training set: the peer_pressure positives removed and the
# label pinned on ordinary messages instead (train() needs 10 positives a label).
_BENIGN = [i for i, (_, op, pp) in enumerate(FOREIGN) if (op, pp) == (0, 0)][:12]
WORSE = [(t, op, int(i in _BENIGN)) for i, (t, op, _) in enumerate(FOREIGN)]

LOG = [
    {"id": 1, "request_id": "r-1", "sender": "client", "text": "他のライターさんはもう始めていますよ"},
    {"id": 2, "request_id": "r-2", "sender": "client", "text": "納品ありがとうございました"},
    {"id": 3, "request_id": "r-2", "sender": "worker", "text": "ありがとうございます"},
]

AT = "2026-11-21T10:00:00+09:00"


def _rows(items, prefix):
    return [{"id": f"{prefix}{i}", "text": t, "off_platform": op, "peer_pressure": pp} for i, (t, op, pp) in enumerate(items)]


def _decision(text, op, pp, at=AT, by="mod-01", **extra):
    return {"text": text, "off_platform": op, "peer_pressure": pp, "decided_by": by, "decided_at": at, "request_id": "r-9", **extra}


def _sha(model_dir):
    return json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))["model_sha256"]


def _hidden_leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _snapshot(folder):
    return {p.name: sha256(p) for p in folder.iterdir() if p.is_file()} if folder.is_dir() else None


@pytest.fixture(scope="module", autouse=True)
def default_model_untouched():
    folders = [ROOT / "models" / "default", ROOT / "models" / "previous"]
    before = [_snapshot(f) for f in folders]
    yield
    assert [_snapshot(f) for f in folders] == before


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Data files and two models: one trained on FOREIGN, a worse one trained on WORSE. Never modified by tests."""
    d = tmp_path_factory.mktemp("moderators")
    files = {
        "good": write_jsonl(d / "good.jsonl", _rows(FOREIGN, "f")),
        "worse": write_jsonl(d / "worse.jsonl", _rows(WORSE, "w")),
        "eval": write_jsonl(d / "eval.jsonl", _rows(EVAL, "e")),
        "log": write_jsonl(d / "log.jsonl", LOG),
    }
    train([files["good"]], d / "good", grid=SMALL_GRID, progress=False)
    train([files["worse"]], d / "worse", grid=SMALL_GRID, progress=False)
    return {**files, "dir": d, "good_model": d / "good", "worse_model": d / "worse"}


@pytest.fixture
def deployed(work, tmp_path):
    """A models/ folder in tmp_path whose default is a copy of the good model."""
    target = tmp_path / "models" / "default"
    shutil.copytree(work["good_model"], target)
    return target


# --- evaluate -------------------------------------------------------------------------------------------------


def test_evaluate_gives_the_figures_and_the_worst_errors(work):
    model = classifier.load(work["worse_model"])
    r = evaluate([work["eval"]], model, worst=3)
    assert r["rows"] == len(EVAL) and r["files"][0]["path"] == str(work["eval"])
    pp = r["labels"]["peer_pressure"]
    probs = model.predict_proba([t for t, _, _ in EVAL])[:, 1]
    assert pp["metrics"] == metrics_at([p for _, _, p in EVAL], probs, model.thresholds["peer_pressure"])
    assert pp["metrics"]["fn"] > 0 and pp["metrics"]["fp"] > 0
    assert sum(b["n"] for b in pp["calibration"]) == len(EVAL)

    fn, fp = pp["false_negatives"], pp["false_positives"]
    assert len(fn) == min(3, pp["metrics"]["fn"]) and len(fp) == min(3, pp["metrics"]["fp"])
    assert [e["probability"] for e in fn] == sorted(e["probability"] for e in fn)  # most confident misses first
    assert [e["probability"] for e in fp] == sorted((e["probability"] for e in fp), reverse=True)
    assert all(e["gold"]["peer_pressure"] == 1 and e["probability"] < pp["threshold"] for e in fn)
    assert all(e["gold"]["peer_pressure"] == 0 and e["probability"] >= pp["threshold"] for e in fp)
    assert all(e["evidence"] and e["evidence"][0]["label"] == "peer_pressure" for e in fp)  # why it fired

    text = format_evaluation(r)
    assert re.search(r"peer_pressure\s+\d\.\d{4}\s+\d\.\d{3}", text)
    assert "calibration, peer_pressure" in text
    assert "worst false negatives, peer_pressure" in text and "worst false positives, peer_pressure" in text
    assert fp[0]["text"] in text and "evidence: 「" in text


def test_evaluate_command_prints_text_or_json(work, capsys):
    proc = subprocess.run([sys.executable, "-m", "classifier", "evaluate", str(work["eval"]), "--model", str(work["worse_model"])],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "off_platform" in proc.stdout and "worst false negatives, peer_pressure" in proc.stdout and "evidence:" in proc.stdout

    assert main(["evaluate", str(work["eval"]), "--model", str(work["worse_model"]), "--json", "--worst", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == len(EVAL) and len(out["labels"]["peer_pressure"]["false_negatives"]) == 1


def test_evaluate_a_directory_needs_a_test_split(work, tmp_path):
    with pytest.raises(DataError, match=r"without written/; expected a labelled JSONL/CSV file or a corpus directory"):
        evaluate([tmp_path], work["good_model"])
    (tmp_path / "written").mkdir()
    (tmp_path / "eval").mkdir()
    shutil.copy(work["eval"], tmp_path / "eval" / "e.jsonl")
    assert evaluate([tmp_path], work["good_model"])["rows"] == len(EVAL)


# --- compare ---------------------------------------------------------------------------------------------------


def test_comparison_shows_metrics_side_by_side_and_the_flips(work):
    c = compare(work["worse_model"], work["good_model"], [work["eval"]], log=work["log"])
    for m in c["metrics"].values():
        assert m["diff"]["f1"] == round(m["new"]["f1"] - m["old"]["f1"], 4)
    assert c["metrics"]["peer_pressure"]["diff"]["f1"] < -0.5
    assert c["gate"]["passed"] is False and c["gate"]["failing"] == ["peer_pressure"]

    flips = c["flips"]["items"]
    assert flips and c["flips"]["broken"] > c["flips"]["fixed"]
    assert flips[0]["effect"] == "broken"  # regressions first
    first = flips[0]
    assert set(first["old"]) == set(first["new"]) == {"off_platform", "peer_pressure", "flagged"}
    assert first["old"]["flagged"] != first["new"]["flagged"] and set(first["gold"]) == set(classifier.LABELS)
    lost = next(f for f in flips if f["text"] == "みんなやってるので大丈夫ですよ")
    assert lost["lost"] == ["peer_pressure"] and lost["gold"]["peer_pressure"] == 1
    assert lost["new"]["peer_pressure"] < lost["old"]["peer_pressure"]

    changed = {r["request_id"]: r for r in c["log"]["changed"]}
    assert changed["r-1"]["old"]["decision"] == "deny" and changed["r-1"]["new"]["decision"] != "deny"
    assert c["log"]["requests"] == 2 and c["log"]["messages"] == 3

    md = comparison_markdown(c)
    assert "| peer_pressure | F1 |" in md and "failed: peer_pressure F1" in md
    assert "みんなやってるので大丈夫ですよ" in md and "| r-1 | False | deny |" in md


def test_comparison_needs_a_held_out_set(work):
    with pytest.raises(DataError, match="no held-out set to compare on"):
        compare(work["worse_model"], work["good_model"], [])


# --- promote and roll back -------------------------------------------------------------------------------------


def test_a_worse_model_is_refused_promoted_with_force_and_rolled_back(work, deployed):
    good, worse = _sha(work["good_model"]), _sha(work["worse_model"])
    c = compare(work["worse_model"], deployed, [work["eval"]])
    with pytest.raises(PromotionRefused, match=r"failed: peer_pressure F1 −0\.\d+, more than the tolerance 0\.01\. .* is unchanged; "
                                               r"pass --force-promote"):
        promote(work["worse_model"], deployed, comparison=c)
    assert _sha(deployed) == good and not previous_path(deployed).exists()

    record = promote(work["worse_model"], deployed, comparison=c, force=True)
    previous = deployed.parent / "previous"
    assert record["forced"] is True and record["previous"] == str(previous)
    assert _sha(deployed) == worse and _sha(previous) == good
    assert json.loads((deployed / "PROMOTED.json").read_text(encoding="utf-8"))["forced"] is True
    assert _hidden_leftovers(deployed.parent) == []
    classifier.load(deployed)

    back = rollback(deployed)
    assert _sha(deployed) == good and _sha(previous) == worse and back["now_previous"] == str(previous)
    rollback(deployed)  # twice undoes it
    assert _sha(deployed) == worse and _sha(previous) == good
    assert _hidden_leftovers(deployed.parent) == []


def test_a_model_no_worse_is_promoted_and_the_old_previous_is_replaced(work, deployed):
    stale = previous_path(deployed)
    shutil.copytree(work["worse_model"], stale)
    c = compare(work["good_model"], deployed, [work["eval"]], tolerance=0.0)
    assert c["gate"]["passed"] and all(d == 0 for d in c["gate"]["drops"].values())
    record = promote(work["good_model"], deployed, comparison=c)
    assert record["forced"] is False and _sha(stale) == _sha(work["good_model"])
    assert _hidden_leftovers(deployed.parent) == []


def test_promotion_into_an_empty_place_needs_no_comparison(work, tmp_path):
    target = tmp_path / "models" / "staging"
    record = promote(work["good_model"], target)
    assert record["previous"] is None and record["gate"] is None
    assert _sha(target) == _sha(work["good_model"]) and previous_path(target).name == "staging-previous"


def test_promotion_refuses_a_comparison_of_other_models(work, deployed):
    c = compare(work["worse_model"], work["good_model"], [work["eval"]])
    shutil.rmtree(deployed)
    shutil.copytree(work["worse_model"], deployed)  # someone promoted meanwhile
    with pytest.raises(PromotionError, match="compare again"):
        promote(work["worse_model"], deployed, comparison=c, force=True)
    with pytest.raises(PromotionError, match=r"promotion needs a comparison with it \(train.py --compare"):
        promote(work["good_model"], deployed)


def test_a_copy_that_does_not_verify_replaces_nothing(work, deployed, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(work["worse_model"], broken)
    c = compare(broken, deployed, [work["eval"]], tolerance=0.99)
    with open(broken / "model.skops", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelLoadError, match="the manifest says"):
        promote(broken, deployed, comparison=c)
    assert _sha(deployed) == _sha(work["good_model"]) and not previous_path(deployed).exists()
    assert _hidden_leftovers(deployed.parent) == []


def test_rollback_without_a_previous_model(deployed):
    with pytest.raises(PromotionError, match=r"no previous model at .*previous: nothing to roll back to"):
        rollback(deployed)


def test_rollback_command(work, deployed):
    c = compare(work["worse_model"], deployed, [work["eval"]])
    promote(work["worse_model"], deployed, comparison=c, force=True)
    proc = subprocess.run([sys.executable, "-m", "classifier", "rollback", "--model", str(deployed)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"restored {deployed}" in proc.stdout and "run rollback again to undo" in proc.stdout
    assert _sha(deployed) == _sha(work["good_model"])


# --- train.py --compare --promote ------------------------------------------------------------------------------


def test_train_py_compares_refuses_then_forces(work, deployed, tmp_path, capsys):
    out = tmp_path / "candidate"
    args = ["--data", str(work["worse"]), "--eval", str(work["eval"]), "--log", str(work["log"]), "--out", str(out),
            "--promote", "--promote-to", str(deployed), "--quiet"]
    env = {**os.environ, "CLASSIFIER_MODEL": str(deployed)}  # a slip in the arguments still cannot reach models/default
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "not promoted: failed: peer_pressure F1" in proc.stderr and "--force-promote" in proc.stderr
    assert "gate failed" in proc.stdout
    md = (out / "COMPARISON.md").read_text(encoding="utf-8")
    assert "## Promotion gate" in md and "Requests whose review decision changes" in md and "| r-1 |" in md
    assert json.loads((out / "comparison.json").read_text(encoding="utf-8"))["gate"]["failing"] == ["peer_pressure"]
    assert _sha(deployed) == _sha(work["good_model"])

    # Forced, in-process, with feedback on a held-out message: it is skipped, not trained on.
    decisions = write_jsonl(tmp_path / "decisions.jsonl", [_decision(EVAL[0][0], 0, 0)])
    assert train_main(args + ["--force", "--force-promote", "--feedback", str(decisions)]) == 0
    stdout = capsys.readouterr().out
    assert "forced with --force-promote although the gate failed: peer_pressure F1" in stdout
    assert _sha(deployed) == _sha(out) and _sha(previous_path(deployed)) == _sha(work["good_model"])
    manifest = json.loads((deployed / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["feedback"]["skipped"] == 1 and manifest["feedback"]["details"]["skipped"][0]["held_out_as"].startswith(str(work["eval"]))


@pytest.mark.parametrize("extra, message", [
    (["--eval", "EVAL"], "--eval and --log need --compare or --promote"),
    (["--force-promote"], "--promote-to and --force-promote need --promote"),
    (["--promote", "--promote-to", "DEPLOYED", "--compare", "GOOD"], "--promote gates on a comparison with the model it replaces"),
    (["--promote", "--promote-to", "OUT"], "is the promotion target; train into another directory"),
    (["--compare", "OUT", "--force"], "is the model to compare with; train into another directory"),
    (["--compare", "GOOD", "--tolerance", "1.5"], r"--tolerance must be in \[0, 1\), got 1.5"),
], ids=["eval-alone", "force-promote-alone", "compare-not-target", "out-is-target", "out-is-baseline", "tolerance"])
def test_train_py_argument_mistakes_are_refused_before_training(work, deployed, tmp_path, capsys, extra, message):
    named = {"EVAL": work["eval"], "GOOD": work["good_model"], "DEPLOYED": deployed, "OUT": tmp_path / "m"}
    with pytest.raises(SystemExit) as exc:
        train_main(["--data", str(work["worse"]), "--out", str(tmp_path / "m"), *(str(named.get(a, a)) for a in extra)])
    assert exc.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


def test_compare_without_a_held_out_set_fails_before_training(work, tmp_path, capsys):
    code = train_main(["--data", str(work["worse"]), "--out", str(tmp_path / "m"), "--compare", str(work["good_model"]), "--quiet"])
    assert code == 2 and "--compare needs a held-out set" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# --- feedback ----------------------------------------------------------------------------------------------------


def test_decisions_override_add_and_agree(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", _rows(FOREIGN, "f"))
    rows, _ = load_labelled([corpus])
    decisions = write_jsonl(tmp_path / "d.jsonl", [
        _decision("皆様にお送りしています", 0, 1, decision="deny"),  # corpus says 0, 0
        _decision("ＬＩＮＥでやり取りしましょう、IDはtaro_01です", 1, 0),  # the same after normalisation, agrees
        _decision("そちらの口座に直接振り込みます", 1, 0),  # new
    ])
    merged, report = apply_feedback(rows, decisions)
    assert {k: report[k] for k in ("decisions", "changed", "added", "unchanged", "skipped", "conflicts")} == \
        {"decisions": 3, "changed": 1, "added": 1, "unchanged": 1, "skipped": 0, "conflicts": 0}
    assert report["file"] == str(decisions) and report["sha256"] == sha256(decisions)
    flipped = next(r for r in merged if r["text"] == "皆様にお送りしています")
    assert (flipped["off_platform"], flipped["peer_pressure"]) == (0, 1)
    assert report["details"]["changed"][0]["before"] == {"off_platform": 0, "peer_pressure": 0}
    added = merged[-1]
    assert added["text"] == "そちらの口座に直接振り込みます" and added["source"] == "feedback" and added["_norm"]
    assert len(merged) == len(rows) + 1
    assert next(r for r in rows if r["text"] == "皆様にお送りしています")["peer_pressure"] == 0  # input untouched


def test_conflicting_decisions_latest_wins_by_time_then_file_order(tmp_path):
    rows, _ = load_labelled([write_jsonl(tmp_path / "c.jsonl", _rows(FOREIGN, "f"))])
    decisions = write_jsonl(tmp_path / "d.jsonl", [
        _decision("修正をお願いします", 1, 0, at="2026-11-21T02:00:00Z", by="a"),  # 11:00 in Tokyo: the latest
        _decision("修正をお願いします", 0, 1, at="2026-11-21T10:30:00+09:00", by="b"),
        _decision("急ぎでお願いします", 1, 0, at=AT, by="c"),
        _decision("急ぎでお願いします", 0, 1, at=AT, by="d"),  # same time, later in the file
    ])
    merged, report = apply_feedback(rows, decisions)
    by_text = {r["text"]: (r["off_platform"], r["peer_pressure"]) for r in merged}
    assert by_text["修正をお願いします"] == (1, 0) and by_text["急ぎでお願いします"] == (0, 1)
    assert report["conflicts"] == 2 and report["changed"] == 2
    first = report["details"]["conflicts"][0]
    assert first["kept"] == f"{decisions}:1" and [d["decided_by"] for d in first["decisions"]] == ["a", "b"]


def test_decisions_on_held_out_messages_are_skipped(tmp_path):
    corpus = tmp_path / "corpus"
    for folder in ("written", "eval"):
        (corpus / folder).mkdir(parents=True)
    write_jsonl(corpus / "written" / "a.jsonl", [r for r in _rows(FOREIGN, "f") if part_of("written", normalize(r["text"]).text) == "train"])
    write_jsonl(corpus / "eval" / "e.jsonl", _rows(EVAL[:10], "e"))
    extra = write_jsonl(tmp_path / "extra_eval.jsonl", _rows(EVAL[10:], "x"))
    rows, _ = load_labelled([corpus])
    decisions = write_jsonl(tmp_path / "d.jsonl", [
        _decision(EVAL[0][0], 0, 0),  # in the corpus's test split: found from the layout
        _decision(EVAL[15][0], 1, 0),  # in an --eval file: named by train.py
        _decision("ほかのワーカーさんはもう振込先を教えてくれました", 1, 1),
    ])
    merged, report = apply_feedback(rows, FeedbackFile(decisions, holdout=[extra]))
    assert report["skipped"] == 2 and report["added"] == 1
    assert {s["held_out_as"].rsplit(":", 1)[0] for s in report["details"]["skipped"]} == {str(corpus / "eval" / "e.jsonl"), str(extra)}
    assert not {EVAL[0][0], EVAL[15][0]} & {r["text"] for r in merged}
    _, inferred_only = apply_feedback(rows, decisions)
    assert inferred_only["skipped"] == 1


BAD_DECISIONS = [
    ('{"text": "a", "off_platform": 1, "peer_pressure": 0}', "'decided_at' is missing, expected an ISO 8601 time"),
    ('{"text": "a", "off_platform": 1, "peer_pressure": 0, "decided_at": "2026-11-21T10:00:00"}', "has no UTC offset"),
    ('{"text": "a", "off_platform": 1, "peer_pressure": 0, "decided_at": "yesterday"}', "'decided_at' is 'yesterday', expected"),
    ('{"text": "a", "off_platform": 1, "peer_pressure": 0, "decided_at": 1700000000}', "'decided_at' is int 1700000000"),
    (f'{{"text": "a", "off_platform": "1", "peer_pressure": 0, "decided_at": "{AT}"}}', "label 'off_platform' is '1', expected 0 or 1"),
    (f'{{"text": "a", "off_platform": true, "peer_pressure": 0, "decided_at": "{AT}"}}', "label 'off_platform' is True"),
    (f'{{"off_platform": 1, "peer_pressure": 0, "decided_at": "{AT}"}}', "'text' is missing, expected a string"),
    (f'{{"text": "a", "off_platform": 1, "peer_pressure": 0, "decided_at": "{AT}", "decided_by": 7}}', "'decided_by' is int 7"),
    ("not json", "not JSON"),
]


@pytest.mark.parametrize("line, message", BAD_DECISIONS, ids=[m.split(",")[0] for _, m in BAD_DECISIONS])
def test_bad_decisions_name_file_line_and_reason(tmp_path, line, message):
    good = json.dumps(_decision("納品ありがとうございました", 0, 0), ensure_ascii=False)
    path = tmp_path / "d.jsonl"
    path.write_text(good + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)) as exc:
        apply_feedback([], path)
    assert str(exc.value).startswith(f"{path}:3: ")


def test_a_decision_flips_a_label_and_the_retrained_card_records_it(work, tmp_path):
    corpus = tmp_path / "corpus"
    for folder in ("written", "eval"):
        (corpus / folder).mkdir(parents=True)
    foreign = write_jsonl(tmp_path / "foreign.jsonl", _rows(FOREIGN, "f"))
    write_jsonl(corpus / "eval" / "e.jsonl", _rows(EVAL, "e"))
    text = "皆様にお送りしています"
    decisions = write_jsonl(tmp_path / "decisions.jsonl", [
        _decision(text, 0, 0, at="2026-11-20T09:00:00+09:00", by="mod-01"),
        _decision(text, 0, 1, at="2026-11-21T09:00:00+09:00", by="mod-02", decision="deny"),
        _decision(EVAL[6][0], 0, 0),  # a test-split message: never trained on
    ])
    out = tmp_path / "model"
    manifest = train([foreign, corpus], out, feedback=decisions, grid=SMALL_GRID, progress=False)

    f = manifest["feedback"]
    assert (f["changed"], f["added"], f["conflicts"], f["skipped"]) == (1, 0, 1, 1)
    assert f["details"]["changed"][0]["text"] == text and f["details"]["changed"][0]["after"]["peer_pressure"] == 1
    assert manifest["data"]["label_counts"]["peer_pressure"] == sum(pp for _, _, pp in FOREIGN) + 1
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Moderator feedback" in card
    assert "1 corpus labels changed, 0 messages added, 1 texts with conflicting decisions (latest kept), 1 skipped" in card
    assert f"| {text} | off_platform=0, peer_pressure=0 | off_platform=0, peer_pressure=1 | mod-02 | 2026-11-21T09:00:00+09:00 |" in card

    # Same rows and seed as the good model but for the one decision: only the decision moved the score.
    before = classifier.load(work["good_model"]).predict_proba([text])[0, 1]
    after = classifier.load(out).predict_proba([text])[0, 1]
    assert after > before


def test_compare_and_promote_commands(work, deployed, tmp_path, capsys):
    candidate = tmp_path / "candidate"
    shutil.copytree(work["worse_model"], candidate)
    assert main(["compare", str(candidate), "--against", str(deployed), "--eval", str(work["eval"])]) == 0
    assert (candidate / "COMPARISON.md").is_file() and "held-out" in capsys.readouterr().out
    # The worse model does not pass the gate: refused, status 1, the deployed model untouched.
    assert main(["promote", str(candidate), "--to", str(deployed), "--eval", str(work["eval"])]) == 1
    assert _sha(deployed) == _sha(work["good_model"])
    assert main(["promote", str(candidate), "--to", str(deployed), "--eval", str(work["eval"]), "--force-promote"]) == 0
    assert _sha(deployed) == _sha(work["worse_model"]) and _sha(previous_path(deployed)) == _sha(work["good_model"])
