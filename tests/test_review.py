import json
import subprocess
import sys

import pytest

import classifier
from conftest import ROOT, SEED_QUOTES, SEED_QUOTES_MISSED, read_jsonl, write_jsonl

# The seed article's case: a request approved, then denied; the client pushes on.
SEED_CONVERSATION = [
    {"id": 1, "sender": "worker", "text": "サービス外連絡申請が否認になっているようです。こちらでやり取りさせてください。"},
    {"id": 2, "sender": "client", "text": "仮払いが済んだので、ここからは別のチャットアプリで連絡しましょう。IDは cw_client_01 です"},
    *({"id": i + 3, "sender": "client", "text": q} for i, q in enumerate([*SEED_QUOTES_MISSED, *SEED_QUOTES])),
]

STICKER_JOB = [
    {"sender": "client", "text": "LINEスタンプ16個の制作をお願いしたいです。テーマは柴犬です。"},
    {"sender": "worker", "text": "承知しました。ラフを3案お送りします。"},
    {"sender": "client", "text": "ラフ確認しました。2案目でお願いします！納期は来週金曜で大丈夫です。"},
]


def test_seed_conversation_is_denied_with_both_reasons(model):
    r = classifier.review(SEED_CONVERSATION, model=model)
    assert r["decision"] == "deny"
    assert [x["code"] for x in r["reasons"]] == ["off_platform", "peer_pressure"]
    assert all(x["message"] for x in r["reasons"])
    assert r["evidence"] and r["evidence"][0]["flagged"]
    assert r["scores"]["peer_pressure"]["flagged"] >= len(SEED_QUOTES)


def test_sticker_job_is_approved(model):
    r = classifier.review(STICKER_JOB, model=model)
    assert r["decision"] == "approve" and r["evidence"] == []
    assert r["reasons"][0]["code"] == "no_findings"


def test_borderline_message_gives_review(model):
    # A message whose probability lies in the band [review_lower, threshold).
    borderline = next(t for t in BORDERLINE_CANDIDATES if _in_band(model, t))
    r = classifier.review([borderline], model=model)
    assert r["decision"] == "review"
    assert r["reasons"][0]["code"].startswith("uncertain_")


BORDERLINE_CANDIDATES = [
    "もう少し気軽にやり取りできる方法があればいいのですが",
    "別の方法でファイルを送ってもらえたりしますか？",
    "やり取りが多くなりそうなので、もっと便利なツールがあれば教えてください",
    "進め方は他の方とも相談して決めています",
    "外で打ち合わせできたら早いんですけどね",
    "連絡手段について相談させてください",
    "ファイルはギガファイル便で送ってもらえますか",
    "他の方はもう提出済みです",
]


def _in_band(model, text):
    r = model.score(text)
    return not r["flagged"] and any(r[k] >= model.review_lower[k] for k in classifier.LABELS)


def test_worker_messages_do_not_count_against_the_client(model):
    worker_scam = [{"sender": "worker", "text": "LINEのIDは worker_0000 です。みんなそうしてるので追加してください"}]
    assert classifier.review(worker_scam, model=model)["decision"] == "approve"
    as_client = [{**worker_scam[0], "sender": "client"}]
    assert classifier.review(as_client, model=model)["decision"] == "deny"


def test_approved_changes_only_contact_sharing(model):
    sharing = ["承認されたので、今後はChatworkでお願いします。IDは client_abc です"]
    pressure = ["他のライターさんはもう始めていますよ。あなたも早くしてください"]
    assert classifier.review(sharing, model=model)["decision"] == "deny"
    assert classifier.review(sharing, approved=True, model=model)["decision"] != "deny"
    assert classifier.review(pressure, model=model)["decision"] == "deny"
    assert classifier.review(pressure, approved=True, model=model)["decision"] == "deny"


def test_bad_messages_are_refused(model):
    with pytest.raises(TypeError, match="position 1 is int"):
        classifier.review(["ok", 3], model=model)
    with pytest.raises(TypeError, match="got a single str"):
        classifier.review("ok", model=model)


def test_review_command_groups_unsorted_rows(tmp_path):
    log = write_jsonl(tmp_path / "log.jsonl", [
        {"request_id": "r1", "sender": "client", "text": STICKER_JOB[0]["text"]},
        {"request_id": "r2", "sender": "client", "text": "他の人はもう仕事を始めている。LINEで連絡して"},
        {"request_id": "r1", "sender": "worker", "text": STICKER_JOB[1]["text"]},
        {"request_id": "r3", "sender": "client", "text": "IDは taro_1 です、LINEで", "approved": True},
        "{broken",
        {"sender": "client", "text": "no request id"},
        {"request_id": "r1", "sender": "client", "text": 7},
    ])
    proc = subprocess.run([sys.executable, "-m", "classifier", "review", str(log)], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    out = read_jsonl(proc.stdout.decode())
    by_id = {r["request_id"]: r for r in out}
    assert by_id["r1"]["decision"] == "approve" and by_id["r1"]["messages"] == 2
    assert by_id["r1"]["errors"][0]["error"] == "'text' is int, expected a string"
    assert by_id["r2"]["decision"] == "deny"
    assert by_id["r3"]["approved"] is True and by_id["r3"]["decision"] != "deny"
    assert len(by_id[None]["errors"]) == 2
    assert [r["request_id"] for r in out] == ["r1", "r2", "r3", None]
