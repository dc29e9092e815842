"""Screenshot of the review page: the request view of a scam request from the sample log.

    python docs/screenshot.py [--out docs/review-page.png] [--request r-1001]

Drives Debian's Chromium (/usr/bin/chromium, `apt-get install chromium`)
through Playwright; it never downloads a browser. Decisions go to a
temporary file, so the page shows the request undecided.
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(out, request_id="r-1001", log=ROOT / "data" / "samples" / "messages.jsonl", size=(1280, 800)):
    """Write a PNG of the request view of ``request_id``; return its path."""
    from playwright.sync_api import sync_playwright

    from classifier.serve import BackgroundServer, create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(log, Path(tmp) / "decisions.jsonl")
        with BackgroundServer(app) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": size[0], "height": size[1]}, locale="ja-JP")
                page.goto(f"{server.url}/request?id={request_id}")
                page.wait_for_selector("mark")
                page.screenshot(path=str(out))
            finally:
                browser.close()
    return Path(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "review-page.png"))
    parser.add_argument("--request", default="r-1001")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: Chromium not installed at {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2
    print(screenshot(args.out, args.request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
