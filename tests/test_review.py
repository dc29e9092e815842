import subprocess
import sys

import pytest

import classifier
from conftest import ROOT, SEED_QUOTES, read_jsonl, write_jsonl

# The seed article's case: a request approved, then denied; the client pushes on.
SEED_CONVERSATION = [
    {"id": 1, "sender": "worker", "text": "サービス外連絡申請が否認になっているようです。こちらでやり取りさせてください。"},
    {"id": 2, "sender": "client", "text": "仮払いが済んだので、ここからは別のチャットアプリで連絡しましょう。IDは cw_client_01 です"},
    *({"id": i + 3, "sender": "client", "text": q} for i, q in enumerate(SEED_QUOTES)),
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


def test_review_says_what_is_uncertain_and_why(model):
    import copy

    forced = copy.copy(model)
    forced.manifest = {**model.manifest, "conversation_rule": {**model.manifest["conversation_rule"],
                                                               "approve_below": 1e-9, "deny_at": 1 - 1e-9}}
    r = classifier.review(STICKER_JOB, model=forced)
    assert r["decision"] == "review"
    assert "最も強い兆候は" in r["reasons"][0]["detail"] and 0 <= r["request_score"] <= 1


def test_worker_messages_alone_are_not_approved(model):
    worker_scam = [{"sender": "worker", "text": "LINEのIDは worker_0000 です。みんなそうしてるので追加してください"}]
    r = classifier.review(worker_scam, model=model)
    assert r["decision"] == "review" and r["reasons"][0]["code"] == "no_client_messages"
    as_client = [{**worker_scam[0], "sender": "client"}]
    assert classifier.review(as_client, model=model)["decision"] == "deny"


SOLICITATION = "LINEのIDは taro_0000 です。こちらに追加して、そちらで詳しくやり取りしましょう"


@pytest.mark.parametrize("sender", ["Client", " client ", "CLIENT", "クライアント", "発注者", "buyer", None, "", "bot", 7],
                         ids=["Client", "spaces", "upper", "kana", "hatchusha", "buyer", "None", "empty", "unknown", "int"])
def test_any_spelling_of_the_client_fails_closed(model, sender):
    r = classifier.review([{"sender": sender, "text": SOLICITATION}], model=model)
    assert r["decision"] == "deny"
    known = sender in ("Client", " client ", "CLIENT", "クライアント", "発注者", "buyer")
    assert bool(r["notes"]) == (not known)


@pytest.mark.parametrize("sender", ["Worker", "ワーカー", "受注者", "seller"])
def test_worker_spellings_are_workers(model, sender):
    r = classifier.review([{"sender": sender, "text": SOLICITATION}], model=model)
    assert r["decision"] == "review" and r["notes"] == []


def test_an_empty_conversation_is_not_approved(model):
    r = classifier.review([], model=model)
    assert r["decision"] == "review" and r["reasons"][0]["code"] == "empty"


def test_a_flagged_message_is_never_approved(model):
    rule = model.manifest["conversation_rule"]
    assert rule["approve_below"] <= min(model.thresholds.values())


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
    assert proc.returncode == 1, proc.stderr.decode()  # rows with errors: reported, and the exit status says so
    out = read_jsonl(proc.stdout.decode())
    by_id = {r["request_id"]: r for r in out}
    assert by_id["r1"]["decision"] == "approve" and by_id["r1"]["messages"] == 2
    assert by_id["r1"]["errors"][0]["error"] == "'text' is int, expected a string"
    assert by_id["r2"]["decision"] == "deny"
    assert by_id["r3"]["approved"] is True and by_id["r3"]["decision"] != "deny"
    assert len(by_id[None]["errors"]) == 2
    assert [r["request_id"] for r in out] == ["r1", "r2", "r3", None]
