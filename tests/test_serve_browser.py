"""The review page in a real browser: Debian's headless Chromium driven by Playwright.

The browser is /usr/bin/chromium (`apt-get install chromium`); Playwright never
downloads one here. Without it these tests are skipped, saying why.
"""

import json
import os
import runpy
import struct
import threading

import pytest

from conftest import ROOT, read_jsonl, write_jsonl

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SAMPLE = ROOT / "data" / "samples" / "messages.jsonl"
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
TOKEN = "browser-test-token-0123456789abcdef"

pytestmark = pytest.mark.browser

pytest.importorskip("flask", reason="the review page needs Flask: pip install -e '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright: pip install -e '.[test]'")

from classifier.serve import BackgroundServer, create_app  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not installed at {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ja-JP")
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "messages.jsonl"
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    rows.append({"id": "x-1", "request_id": "r-xss", "sender": "client", "sent_at": "2026-11-29T09:00:00+09:00", "text": PAYLOAD})
    write_jsonl(path, rows)
    return path


@pytest.fixture
def app_server(log, tmp_path, model):
    """Start the app on a free port; yields (base URL, decisions file)."""
    def start(token=None):
        decisions = tmp_path / "decisions.jsonl"
        server = BackgroundServer(create_app(log, decisions, model=model, token=token))
        started.append(server.__enter__())
        return server.url, decisions

    started = []
    yield start
    for server in started:
        server.__exit__(None, None, None)


def test_open_queue_read_a_scam_request_and_deny_it(page, app_server):
    url, decisions = app_server()
    page.goto(url + "/?order=risk")
    assert page.locator("table.queue tbody tr").first.locator(".badge").inner_text() == "否認 deny"
    page.goto(url + "/")  # the default order: what a decision would teach most first
    ids = page.locator("a.req-link").all_inner_texts()
    row = page.locator('tr[data-id="r-1001"]')
    assert row.locator(".badge").inner_text() == "否認 deny"

    # Keyboard: j moves down the queue, Enter opens the focused request.
    for _ in range(ids.index("r-1001") + 1):
        page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url("**/request?id=r-1001")

    # The evidence is highlighted in the original text, the disguised ID shown normalised beside it.
    marks = page.locator("#m-2 .text mark.off_platform")
    assert marks.count() >= 1 and marks.first.is_visible()
    assert any("ＬＩＮＥ" in t or "ＩＤ" in t for t in marks.all_inner_texts())
    # (explain() may end the span inside the <id> placeholder: match its start.)
    assert any("<id" in t for t in page.locator("#m-2 .text .norm").all_inner_texts())
    assert "外部連絡先の共有" in page.locator(".reasons").inner_text()

    page.fill('input[name="decided_by"]', "alice")
    page.locator('input[name="decided_by"]').blur()  # out of the input, so d is a shortcut again
    page.keyboard.press("d")
    page.wait_for_selector(".flash")
    assert "保存しました saved: deny by alice" in page.locator(".flash").inner_text()

    lines = read_jsonl(decisions)
    # The request's decision, with its conversation; no message labels the moderator did not set.
    assert [(line["request_id"], line["kind"], line["decision"], line["decided_by"]) for line in lines] == [
        ("r-1001", "request", "deny", "alice")]

    # Who decided what and when, and the name remembered for the next request.
    assert "alice" in page.locator(".decided").inner_text()
    page.keyboard.press("j")
    page.wait_for_url(f"**/request?id={ids[ids.index('r-1001') + 1]}")
    assert page.input_value('input[name="decided_by"]') == "alice"


def test_correct_a_label_and_approve_with_the_mouse(page, app_server):
    url, decisions = app_server()
    page.goto(url + "/request?id=r-1011")
    page.select_option('select[name="label-1-peer_pressure"]', "1")
    page.click('button[value="approve"]')
    page.wait_for_selector(".flash")
    assert [(r["off_platform"], r["peer_pressure"], r["decision"]) for r in read_jsonl(decisions)[1:]] == [(0, 0, "approve"), (0, 1, "approve")]
    page.goto(url + "/?status=decided")
    assert page.locator("a.req-link").all_inner_texts() == ["r-1011"]


def test_script_payload_renders_inert(page, app_server):
    url, _ = app_server()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    page.goto(url + "/request?id=r-xss")
    text = page.locator("#m-0 .text")
    assert text.inner_text() == PAYLOAD and text.is_visible()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator(".conversation img, .conversation script").count() == 0
    assert errors == []


def test_a_token_is_required_when_set(page, app_server):
    url, _ = app_server(token=TOKEN)
    assert page.goto(url + "/").status == 403
    assert page.goto(url + "/request?id=r-1001&token=wrong").status == 403
    response = page.goto(url + f"/request?id=r-1001&token={TOKEN}")
    assert response.status == 200 and page.url == url + "/request?id=r-1001"
    assert page.goto(url + "/").status == 200  # the cookie carries it now


def _attacker(target):
    """Another local site (a different port: same-site, cross-origin) whose form posts a decision."""
    body = (f'<form method="post" action="{target}/decide">'
            '<input type="hidden" name="request_id" value="r-1002"><input type="hidden" name="decision" value="deny">'
            '<input type="hidden" name="csrf_token" value="guessed"><button id="go">win a prize</button></form>').encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def test_a_cross_site_post_is_refused(page, app_server):
    url, decisions = app_server()
    page.goto(url + "/request?id=r-1002")  # the moderator has a session with the page
    with BackgroundServer(_attacker(url)) as evil:
        page.goto(evil.url + "/")
        with page.expect_navigation() as nav:
            page.click("#go")
        assert nav.value.status == 403
        assert "cross-site request refused" in page.content()
    assert not decisions.exists()


def test_screenshot_script_writes_a_1280x800_png(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not installed at {CHROMIUM}: apt-get install chromium")
    script = runpy.run_path(str(ROOT / "docs" / "screenshot.py"), run_name="screenshot")  # no __pycache__ in docs/
    # The sync API refuses to run inside another running Playwright loop: use a thread of its own.
    out = tmp_path / "page.png"
    errors = []
    thread = threading.Thread(target=lambda: _catch(errors, script["screenshot"], out))
    thread.start()
    thread.join()
    assert not errors, errors
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1280, 800)


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # reported by the test, in the main thread
        errors.append(e)
