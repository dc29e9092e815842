"""The review page through Flask's test client: routes, escaping, token, CSRF, the durable append."""

import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape

from conftest import ROOT, read_jsonl, write_jsonl

pytest.importorskip("flask", reason="the review page needs Flask: pip install -e '.[serve]'")

from classifier import LABELS  # noqa: E402
from classifier import serve as serve_module  # noqa: E402
from classifier.batch import BatchError  # noqa: E402
from classifier.cli import main  # noqa: E402
from classifier.recommend import REASONS  # noqa: E402
from classifier.serve import append_decision, create_app, highlight, read_decisions  # noqa: E402

SAMPLE = ROOT / "data" / "samples" / "messages.jsonl"
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
TOKEN = "s3cret-token-for-tests-0123456789"

# Requests added to the sample log: a script payload, markup in every field a page shows, and no client message.
EXTRA_ROWS = [
    {"id": "x-1", "request_id": "r-xss", "sender": "client", "sent_at": "2026-11-29T09:00:00+09:00", "text": PAYLOAD},
    {"id": "x-2", "request_id": "r-xss", "sender": "client", "sent_at": "2026-11-29T09:01:00+09:00",
     "text": "<b>急ぎ</b>なのでＬＩＮＥ ＩＤ：ａｂｃ＿１２３ を追加してください"},
    {"id": "<i>x-3</i>", "request_id": "<i>r-markup</i>", "sender": "client", "client": "<script>alert(1)</script>",
     "sent_at": "<b>yesterday</b>", "text": "よろしくお願いします"},
    {"id": "x-4", "request_id": "r-worker-only", "sender": "worker", "sent_at": "2026-11-29T10:00:00+09:00",
     "text": "ご連絡ありがとうございます。"},
]


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "messages.jsonl"
    write_jsonl(path, [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()] + EXTRA_ROWS)
    return path


@pytest.fixture
def decisions(tmp_path):
    return tmp_path / "decisions.jsonl"


@pytest.fixture
def make_client(log, decisions, model):
    def make(token=None, decisions_path=decisions):
        return create_app(log, decisions_path, model=model, token=token).test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def html(response):
    return response.get_data(as_text=True)


def csrf(client, request_id="r-1001"):
    page = client.get("/request", query_string={"id": request_id})
    return re.search(r'name="csrf_token" value="([^"]+)"', html(page)).group(1)


def decide(client, request_id, decision, token=None, headers=None, **fields):
    form = {"request_id": request_id, "decision": decision, **fields}
    form["csrf_token"] = csrf(client, request_id) if token is None else token
    return client.post("/decide", data=form, headers={"Origin": "http://localhost", **(headers or {})})


def queue_ids(page):
    return re.findall(r'class="req-link" href="[^"]*">([^<]+)</a>', page)


# --- packaging --------------------------------------------------------------

# One interpreter for both checks: importing the scientific stack takes seconds.
FLASK_CHECK = """
import contextlib, io, sys
import classifier, classifier.batch, classifier.cli, classifier.recommend
classifier.cli._parser()
print("flask imported by the core:", "flask" in sys.modules)
sys.modules["flask"] = None  # as if Flask were not installed
try:
    import classifier.serve
except ImportError as e:
    print("import error:", e)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    status = classifier.cli.main(["serve", sys.argv[1]])
print("serve command:", status, err.getvalue().strip())
"""


def test_flask_is_needed_only_to_serve(log):
    out = subprocess.run([sys.executable, "-c", FLASK_CHECK, str(log)], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.splitlines() == [
        "flask imported by the core: False",
        "import error: the review page needs Flask: install it with `pip install -e '.[serve]'`",
        "serve command: 2 error: the review page needs Flask: install it with `pip install -e '.[serve]'`",
    ]


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is not a loopback address"),
    (["--host", "192.168.1.20"], "give --token as well"),
    (["--token", "short"], "--token must have at least 16 characters, got 5"),
], ids=["any-address", "lan-address", "short-token"])
def test_serve_command_refuses_unsafe_binding(log, capsys, argv, message):
    assert main(["serve", str(log), "--port", "0", *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_log_is_refused(tmp_path, model):
    with pytest.raises(BatchError, match="no such file"):
        create_app(tmp_path / "nope.jsonl", tmp_path / "decisions.jsonl", model=model)
    with pytest.raises(BatchError, match="no such directory"):
        create_app(SAMPLE, tmp_path / "missing" / "decisions.jsonl", model=model)


# --- queue ------------------------------------------------------------------

def test_queue_can_list_requests_riskiest_first(client):
    page = client.get("/?order=risk")
    assert page.status_code == 200
    ids = queue_ids(html(page))
    assert len(ids) == 16 and set(ids) >= {"r-1001", "r-xss", "&lt;i&gt;r-markup&lt;/i&gt;", "r-worker-only"}
    badges = re.findall(r'<tr class="rec-(deny|review|approve)', html(page))
    rank = {"deny": 0, "review": 1, "approve": 2}
    assert [rank[b] for b in badges] == sorted(rank[b] for b in badges)
    assert {"r-1001", "r-1003", "r-1005"} <= set(ids[:badges.count("deny")])
    assert "r-1002" in ids[len(ids) - badges.count("approve"):]


def test_queue_lists_what_a_decision_would_teach_most_first(client, model):
    ids = queue_ids(html(client.get("/")))
    badges = re.findall(r'<tr class="rec-(deny|review|approve)', html(client.get("/")))
    # Review requests (between the rule's bands) come before any request the rule is sure of.
    assert badges.index("review") < min(badges.index(b) for b in ("deny", "approve") if b in badges)
    assert len(ids) == 16


def test_queue_filters_by_recommendation_and_status(client):
    deny = queue_ids(html(client.get("/?rec=deny")))
    assert deny and all(f'<tr class="rec-deny" data-id="{i}">' in html(client.get("/?rec=deny")) for i in deny)
    assert queue_ids(html(client.get("/?status=decided"))) == []
    assert decide(client, "r-1001", "deny").status_code == 303
    assert queue_ids(html(client.get("/?status=decided"))) == ["r-1001"]
    assert "r-1001" not in queue_ids(html(client.get("/?status=undecided&rec=deny")))
    assert queue_ids(html(client.get("/?rec=nonsense"))) == queue_ids(html(client.get("/")))


# --- request view -----------------------------------------------------------

def test_request_view_shows_highlights_scores_and_reasons(client):
    page = client.get("/request?id=r-1001")
    assert page.status_code == 200
    text = html(page)
    assert re.search(r'<mark class="off_platform[^"]*"[^>]*>[^<]+</mark>', text)
    # The disguised ID (ＩＤ：ｗｒｉｔｅ＿ｄｅｓｋ０１) with its normalised form beside it, escaped.
    assert re.search(r'<span class="norm" title="正規化後 normalised form">→ [^<]*id:&lt;id[^<]*</span>', text)
    assert REASONS["off_platform"] in text and REASONS["peer_pressure"] in text
    assert text.count('<article class="msg client"') == 3 and text.count('<article class="msg worker"') == 2
    assert 'class="score off_platform flagged"' in text
    ids = queue_ids(html(client.get("/")))
    assert f'rel="next" href="/request?id={ids[ids.index("r-1001") + 1]}"' in text


def test_request_view_keeps_filters_in_its_links(client):
    approved = queue_ids(html(client.get("/?rec=approve")))
    text = html(client.get(f"/request?id={approved[0]}&rec=approve"))
    assert f'rel="next" href="/request?id={approved[1]}&amp;rec=approve"' in text
    assert 'rel="prev"' not in text
    assert '<input type="hidden" name="rec" value="approve">' in text


def test_unknown_request_is_404_and_escaped(client):
    page = client.get("/request", query_string={"id": "<script>x</script>"})
    assert page.status_code == 404
    assert "<script>x</script>" not in html(page) and "&lt;script&gt;x&lt;/script&gt;" in html(page)


# --- escaping ---------------------------------------------------------------

def message_texts(page):
    """Each message's text as rendered, with the highlight tags (and only those) taken out."""
    texts = re.findall(r'<p class="text">(.*?)</p>', page, flags=re.S)
    return [re.sub(r'<mark class="[a-z_ ]+" title="[a-z_, ()]+">|</mark>|<span class="norm"[^>]*>[^<]*</span>', "", t) for t in texts]


def test_script_payload_is_rendered_as_text(client):
    page = html(client.get("/request?id=r-xss"))
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    texts = message_texts(page)
    assert texts[0] == str(escape(PAYLOAD))
    assert texts[0] == "&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;&lt;script&gt;window.__pwned=1&lt;/script&gt;"
    # Inside highlights too: the message with a LINE ID is flagged, its markup stays text.
    assert texts[1] == str(escape(EXTRA_ROWS[1]["text"]))
    assert "<mark" in page and "<b>急ぎ</b>" not in page


def test_markup_in_ids_names_and_dates_is_escaped(client):
    queue = html(client.get("/"))
    assert "<i>r-markup</i>" not in queue and "&lt;i&gt;r-markup&lt;/i&gt;" in queue
    assert "<script>alert(1)</script>" not in queue and "&lt;script&gt;alert(1)&lt;/script&gt;" in queue
    page = html(client.get("/request", query_string={"id": "<i>r-markup</i>"}))
    assert "<b>yesterday</b>" not in page and "&lt;b&gt;yesterday&lt;/b&gt;" in page
    assert "<i>x-3</i>" not in page


def test_pages_carry_a_strict_content_security_policy(client):
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "same-origin"


SPANS = [
    {"label": "off_platform", "start": 5, "end": 11, "text": "ＩＤ：ａｂｃ", "normalized": "id:<id>", "weight": 1.0},
    {"label": "peer_pressure", "start": 9, "end": 13, "text": "ｂｃ だ", "weight": 0.5},
]


@pytest.mark.parametrize("text, spans, flagged, expected", [
    ("plain text", [], ("off_platform",), [("plain text", (), False, [])]),
    ("LINEのＩＤ：ａｂｃ だよ", SPANS, ("off_platform",),
     [("LINEの", (), False, []), ("ＩＤ：ａ", ("off_platform",), False, []),
      ("ｂｃ", ("off_platform", "peer_pressure"), False, ["id:<id>"]), (" だ", ("peer_pressure",), True, []),
      ("よ", (), False, [])]),
    ("ＬＩＮＥで", [{"label": "off_platform", "start": 0, "end": 4, "normalized": "line", "weight": 1}], LABELS,
     [("ＬＩＮＥ", ("off_platform",), False, []), ("で", (), False, [])]),
    ("abc", [{"label": "off_platform", "start": -3, "end": 99, "weight": 1}, {"label": "bogus", "start": 0, "end": 1, "weight": 1}],
     (), [("abc", ("off_platform",), True, [])]),
], ids=["no-spans", "overlapping", "width-only-normalisation-has-no-note", "clipped-and-unknown-label"])
def test_highlight_segments(text, spans, flagged, expected):
    got = [(s["text"], s["labels"], s["doubt"], s["notes"]) for s in highlight(text, spans, flagged)]
    assert got == expected


@given(st.text(max_size=40), st.lists(st.tuples(st.integers(-5, 45), st.integers(-5, 45), st.sampled_from(LABELS)), max_size=6))
def test_highlight_never_loses_or_reorders_text(text, raw):
    spans = [{"label": label, "start": a, "end": b, "weight": 1.0} for a, b, label in raw]
    segments = highlight(text, spans)
    assert "".join(s["text"] for s in segments) == text
    assert all(s["text"] for s in segments)


# --- token ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/request?id=r-1001", "/static/style.css", "/?token=wrong"],
                         ids=["queue", "request", "static", "wrong-token"])
def test_token_is_required_everywhere(make_client, path):
    assert make_client(token=TOKEN).get(path).status_code == 403


def test_token_in_query_sets_a_cookie_and_leaves_the_address(make_client):
    client = make_client(token=TOKEN)
    first = client.get(f"/request?id=r-1001&token={TOKEN}")
    assert first.status_code == 303 and first.headers["Location"] == "/request?id=r-1001"
    cookie = first.headers["Set-Cookie"]
    assert "review_token=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/").status_code == 200
    assert decide(client, "r-1001", "deny").status_code == 303


@pytest.mark.parametrize("header", [{"X-Review-Token": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}], ids=["x-review-token", "bearer"])
def test_token_in_a_header(make_client, header):
    assert make_client(token=TOKEN).get("/", headers=header).status_code == 200


def test_without_token_only_loopback_host_names_are_served(client):
    assert client.get("/", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8000"}).status_code == 200
    # A DNS-rebinding page reaches 127.0.0.1 under its own name.
    assert client.get("/", headers={"Host": "evil.example:8000"}).status_code == 403


# --- CSRF -------------------------------------------------------------------

@pytest.mark.parametrize("token, headers", [
    ("", {}),
    ("forged", {}),
    (None, {"Origin": "http://evil.example"}),
    (None, {"Origin": "http://127.0.0.1:9999"}),
], ids=["no-token", "wrong-token", "foreign-origin", "other-local-port"])
def test_cross_site_posts_are_refused(client, decisions, token, headers):
    page = decide(client, "r-1002", "approve", token=token, headers=headers)
    assert page.status_code == 403
    assert not decisions.exists()


def test_post_without_origin_needs_the_token_and_a_same_origin_fetch(client, decisions):
    token = csrf(client, "r-1002")
    refused = client.post("/decide", data={"request_id": "r-1002", "decision": "approve", "csrf_token": token},
                          headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403
    ok = client.post("/decide", data={"request_id": "r-1002", "decision": "approve", "csrf_token": token})
    assert ok.status_code == 303 and decisions.exists()


def test_deciding_is_post_only(client):
    assert client.get("/decide?request_id=r-1001&decision=deny").status_code == 405


# --- decisions ----------------------------------------------------------------

def test_deny_records_the_request_not_the_models_flags(client, decisions, model):
    page = decide(client, "r-1001", "deny", decided_by="alice")
    assert page.status_code == 303 and page.headers["Location"] == "/request?id=r-1001"
    lines = read_jsonl(decisions)
    texts = [r["text"] for r in map(json.loads, SAMPLE.read_text(encoding="utf-8").splitlines()) if r["request_id"] == "r-1001"]
    # One record for the request, with its conversation; no message labels the moderator did not set.
    assert len(lines) == 1 and lines[0]["kind"] == "request" and lines[0]["decision"] == "deny"
    assert lines[0]["decided_by"] == "alice" and [m["text"] for m in lines[0]["messages"]] == texts
    assert "保存しました saved: deny by alice" in html(client.get(page.headers["Location"]))


def test_approve_records_zeros_unless_corrected(client, decisions):
    decide(client, "r-1011", "approve")
    lines = read_jsonl(decisions)
    assert lines[0]["kind"] == "request"
    assert [(r["off_platform"], r["peer_pressure"], r["decided_by"]) for r in lines[1:]] == [(0, 0, "moderator")] * 2
    # msg-0034 is the second client message of r-1011 (index 1 in the request).
    decide(client, "r-1011", "approve", **{"label-1-peer_pressure": "1", "label-0-off_platform": ""})
    assert [(r["off_platform"], r["peer_pressure"]) for r in read_jsonl(decisions)[4:]] == [(0, 0), (0, 1)]


def test_deny_with_a_correction_labels_that_message_only(client, decisions, model):
    decide(client, "r-1001", "deny", **{"label-2-off_platform": "1"})
    lines = {r.get("message_id"): r for r in read_jsonl(decisions)}
    assert lines["msg-0003"]["off_platform"] == 1 and set(lines) == {None, "msg-0003"}
    shown = "peer_pressure" in model.score(lines["msg-0003"]["text"])["flagged"]
    assert lines["msg-0003"]["peer_pressure"] == int(shown)


@pytest.mark.parametrize("fields, status", [
    ({"decision": "maybe"}, 400),
    ({"request_id": "r-nope"}, 404),
    ({"request_id": "r-worker-only"}, 400),
    ({"label-0-off_platform": "2"}, 400),
], ids=["bad-decision", "unknown-request", "no-client-message", "bad-label"])
def test_bad_decisions_are_refused(client, decisions, fields, status):
    form = {"request_id": "r-1001", "decision": "deny", "csrf_token": csrf(client), **fields}
    assert client.post("/decide", data=form, headers={"Origin": "http://localhost"}).status_code == status
    assert not decisions.exists()


def test_decision_is_fsynced_before_the_page_says_saved(client, decisions, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        real_fsync(fd)
        if os.path.exists(decisions) and os.fstat(fd).st_ino == os.stat(decisions).st_ino:
            synced.append(decisions.read_text(encoding="utf-8"))

    monkeypatch.setattr(serve_module.os, "fsync", spy)
    page = decide(client, "r-1005", "deny")
    assert page.status_code == 303
    assert len(synced) == 1 and [(r["request_id"], r.get("kind")) for r in read_jsonl(synced[0])] == [("r-1005", "request")]


def test_a_failed_write_is_not_reported_saved(client, decisions, monkeypatch):
    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(serve_module.os, "fsync", broken)
    page = decide(client, "r-1005", "deny")
    assert page.status_code == 500 and "NOT saved" in html(page) and "保存しました" not in html(page)
    monkeypatch.undo()
    assert "未判断 undecided" in html(client.get("/request?id=r-1005"))


def test_decisions_are_read_back_at_start_up(make_client, decisions):
    first = make_client()
    decide(first, "r-1003", "deny", decided_by="山田 花子")
    decide(first, "r-1003", "approve", decided_by="鈴木")
    again = make_client()
    page = html(again.get("/request?id=r-1003"))
    assert '<b class="who">鈴木</b>' in page and "履歴 history (2)" in page and "山田 花子" in page
    assert "記録 recorded: off_platform 0 · peer_pressure 0" in page
    assert queue_ids(html(again.get("/?status=decided"))) == ["r-1003"]


def test_moderator_name_is_remembered_and_cleaned(client, decisions):
    decide(client, "r-1001", "deny", decided_by=" 佐藤\x1b[31m\n ")
    assert read_jsonl(decisions)[0]["decided_by"] == "佐藤[31m"
    assert 'name="decided_by" value="佐藤[31m"' in html(client.get("/request?id=r-1002"))
    decide(client, "r-1002", "approve", decided_by="   ")
    assert read_jsonl(decisions)[-1]["decided_by"] == "moderator"


def test_append_survives_a_line_cut_short(tmp_path):
    path = tmp_path / "decisions.jsonl"
    path.write_text('{"text": "a", "request_id": "r-1", "decision": "deny"}\n{"text": "cut sho', encoding="utf-8")
    append_decision(path, [{"text": "b", "off_platform": 1, "peer_pressure": 0, "request_id": "r-2", "decision": "deny",
                            "decided_by": "x", "decided_at": "2026-11-29T10:00:00+09:00"}])
    decisions, warnings = read_decisions(path)
    assert set(decisions) == {"r-1", "r-2"} and decisions["r-2"][0]["labels"] == {"b": {"off_platform": 1, "peer_pressure": 0}}
    assert len(warnings) == 1 and "line 2 is not JSON" in warnings[0]


def test_unreadable_decision_lines_are_reported_not_fatal(make_client, decisions):
    decisions.write_text('not json\n{"text": "x", "off_platform": 1}\n', encoding="utf-8")
    page = html(make_client().get("/"))
    assert "line 1 is not JSON" in page and "line 2 names no request_id" in page


def test_the_training_loop_reads_what_the_page_writes(client, decisions):
    feedback = pytest.importorskip("classifier.feedback", reason="classifier.feedback (train.py --feedback) is not in this tree")
    decide(client, "r-1001", "deny", decided_by="mod-03")
    decide(client, "r-1002", "approve", decided_by="mod-03")
    rows = feedback.read_decisions(decisions)
    assert [(r["request_id"], r["decision"]) for r in rows] == [("r-1002", "approve")] * 3
    assert all(r["_at"].tzinfo is not None for r in rows)
    requests = feedback.read_request_decisions(decisions)
    assert sorted((c["id"], c["decision"]) for c in requests) == [("feedback:r-1001", "deny"), ("feedback:r-1002", "approve")]


def test_a_deleted_decisions_file_is_reported(client, decisions, capsys):
    decide(client, "r-1011", "approve")
    decisions.unlink()
    page = decide(client, "r-1001", "deny")
    shown = html(client.get(page.headers["Location"]))
    assert "was deleted while the page was running" in shown
    assert "was deleted while the page was running" in capsys.readouterr().err
    assert [r["request_id"] for r in read_jsonl(decisions)] == ["r-1001"]


def test_bidi_controls_in_ids_are_shown_not_obeyed():
    from classifier.serve import visible

    assert visible("r-\u202e1001") == "r-⟨U+202E⟩1001" and visible("r-1001") == "r-1001"


def test_a_stalled_connection_times_out():
    from classifier import serve as serve_module

    assert 0 < serve_module._QuietHandler.timeout <= 60 and serve_module._RedactingHandler.timeout == serve_module.READ_TIMEOUT
