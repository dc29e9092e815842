"""The review page: a local web app where moderators decide requests.

    python -m classifier serve LOG [--decisions decisions.jsonl] [--port 8000]

The queue lists the requests of a message log (rows with ``request_id``),
riskiest first, with :func:`classifier.recommend.review`'s recommendation.
A request's page shows the conversation, the scores of every client message
and the evidence spans highlighted in the original text. Approving or
denying appends one line per client message to the decisions file, in the
moderators' loop format (``text``, a 0/1 per label, ``decided_by``,
``decided_at``, ``request_id``, ``decision``, ``message_id``), and the page
says "saved" only after the lines are fsynced.

The messages are written by scammers, so:

- every message text is rendered by Jinja with autoescaping, as text; the
  highlighting is built here (:func:`highlight`) as plain/highlighted
  segments, never as HTML, and a Content-Security-Policy allows only this
  app's own script;
- the server binds to 127.0.0.1 and, without a token, answers only requests
  whose ``Host`` is a loopback name (a DNS-rebinding page gets 403); bound
  anywhere else it needs ``--token``, which every request must carry
  (``?token=`` once, then a cookie; or an ``X-Review-Token`` or
  ``Authorization: Bearer`` header);
- state changes are POSTs that need the session's CSRF token and, when the
  browser sends one, a same-origin ``Origin``.

Flask is imported only here, and only the ``serve`` command imports this
module: the scoring package does not need it.
"""

import hmac
import ipaddress
import math
import os
import re
import secrets
import signal
import sys
import threading
import unicodedata
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

try:
    from flask import Flask, abort, flash, redirect, render_template, request, session, url_for
    from werkzeug.serving import WSGIRequestHandler, make_server
except ImportError:
    raise ImportError("the review page needs Flask: install it with `pip install -e '.[serve]'`") from None

from . import batch
from .model import LABELS, Model, load
from .conversation import normalize_sender
from .recommend import group_requests, review

__all__ = ["create_app", "serve", "highlight", "append_decision", "read_decisions", "BackgroundServer"]

DECISIONS = ("approve", "deny")
RECOMMENDATIONS = ("deny", "review", "approve")
#: Fields of a log row that may name the client, first found wins.
CLIENT_FIELDS = ("client", "client_name", "client_id")
TOKEN_COOKIE = "review_token"
MODERATOR_COOKIE = "moderator"
DEFAULT_MODERATOR = "moderator"
MAX_NAME = 64
#: Shortest --token the command accepts: it is the only lock when bound beyond loopback.
MIN_TOKEN = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


# --- highlighting -----------------------------------------------------------

def highlight(text, spans, flagged=LABELS):
    """Split a text into plain and highlighted segments by evidence spans.

    The segments are rendered escaped by the template, each highlighted one
    inside ``<mark>``; no HTML is built from the text.

    Parameters
    ----------
    text : str
        The original message text.
    spans : list of dict
        Evidence spans (``start``, ``end``, ``label``, optional
        ``normalized``) as :meth:`classifier.Model.explain` gives them;
        they may overlap. Offsets outside the text are clipped.
    flagged : iterable of str
        The labels flagged for this message; a segment covered only by
        spans of other labels is marked ``doubt`` (an uncertain score).

    Returns
    -------
    list of dict
        ``text``; ``labels``, the labels of the spans covering it (empty for
        plain text, in LABELS order); ``doubt``; ``notes``, the normalised
        form of a disguised span that ends with this segment (at most one:
        the strongest span's, a flagged label's first; none where
        normalising only folded width and case).
    """
    n = len(text)
    clean = []
    for s in spans:
        a, b = max(0, int(s["start"])), min(n, int(s["end"]))
        if a < b and s.get("label") in LABELS:
            norm = s.get("normalized")
            clean.append((a, b, s["label"], norm if norm and _disguised(text[a:b], norm) else None,
                          (s["label"] in flagged, s.get("weight", 0))))
    cuts = sorted({0, n, *(c[0] for c in clean), *(c[1] for c in clean)})
    segments = []
    for a, b in zip(cuts, cuts[1:]):
        covering = {label for sa, sb, label, _, _ in clean if sa <= a and b <= sb}
        labels = tuple(label for label in LABELS if label in covering)
        doubt = bool(labels) and not any(label in flagged for label in labels)
        # One note per place: that of the strongest span ending here (a flagged label first).
        ending = [(strength, norm) for _, sb, _, norm, strength in clean if sb == b and norm]
        notes = [max(ending)[1]] if ending else []
        last = segments[-1] if segments else None
        if last and last["labels"] == labels and last["doubt"] == doubt and not last["notes"]:
            last["text"] += text[a:b]
            last["notes"] = notes
        else:
            segments.append({"text": text[a:b], "labels": labels, "doubt": doubt, "notes": notes})
    return segments


def _disguised(original, normalized):
    """Whether normalising did more than fold width and case (ＬＩＮＥ -> line is no disguise worth a note)."""
    return unicodedata.normalize("NFKC", original).casefold() != normalized.casefold()


# --- the decisions file -----------------------------------------------------

_append_lock = threading.Lock()


def append_decision(path, records):
    """Append records as JSON lines, durably: flushed and fsynced on return.

    The lines go out in one write under an exclusive lock (another server on
    the same file cannot interleave them). A last line cut short by a crash
    gets its newline first, so it cannot swallow the new ones.

    Raises
    ------
    OSError
        If the file cannot be written or synced; nothing counts as saved.
    """
    path = Path(path)
    data = "".join(batch.to_json_line(r) for r in records).encode("utf-8")
    created = not path.exists()
    with _append_lock:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            _lock_file(fd)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)


def _lock_file(fd):
    try:
        import fcntl
    except ImportError:  # Windows: the in-process lock still holds
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _fsync_dir(directory):
    # A new file's directory entry must reach the disk too.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_decisions(path):
    """Decisions recorded in a decisions file.

    Consecutive lines with the same request, moderator, time and decision
    are one decision. Lines that cannot be read are skipped and reported.

    Returns
    -------
    decisions : dict
        request id -> list of decisions, oldest first; each has ``decision``,
        ``decided_by``, ``decided_at`` and ``labels`` (message id or text ->
        {label: 0|1}).
    warnings : list of str
    """
    path = Path(path)
    decisions, warnings = {}, []
    if not path.exists():
        return decisions, warnings
    last_key = None
    for row in batch.read_rows([str(path)], input_format="jsonl"):
        if row.error:
            warnings.append(f"{path.name}: {row.error}; ignored")
            last_key = None
            continue
        rec = row.record
        rid = rec.get("request_id")
        if rid in (None, ""):
            warnings.append(f"{path.name}: line {row.line} names no request_id; ignored")
            last_key = None
            continue
        key = (str(rid), rec.get("decided_at"), rec.get("decided_by"), rec.get("decision"))
        if key != last_key:
            decisions.setdefault(key[0], []).append(
                {"decision": key[3], "decided_by": key[2], "decided_at": key[1], "labels": {}})
            last_key = key
        if rec.get("kind") == "request":
            continue
        labels = {label: rec.get(label) for label in LABELS if rec.get(label) in (0, 1)}
        ref = rec.get("message_id") if rec.get("message_id") is not None else rec.get("text")
        decisions[key[0]][-1]["labels"][_ref(ref)] = labels
    return decisions, warnings


# Bidirectional controls reorder what follows them on screen (an id that reads
# "r-1001" but is another): ids show them as visible code points.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value):
    """A value for display, with bidirectional control characters shown as ⟨U+XXXX⟩."""
    return _BIDI.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", str(value))


def _ref(value):
    return str(value) if value is not None else ""


# --- the log: requests, scored once at start-up -----------------------------

def _parse_time(value):
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _show_time(value):
    t = _parse_time(value)
    return t.strftime("%Y-%m-%d %H:%M") if t else (str(value) if value not in (None, "") else "")


def _in_order(messages):
    """Messages by time when every one has a comparable time, else as logged."""
    times = [_parse_time(m.get("sent_at")) for m in messages]
    if not times or any(t is None for t in times) or len({t.tzinfo is None for t in times}) > 1:
        return list(messages)
    return [m for _, m in sorted(zip(times, messages), key=lambda p: p[0])]


def _is_client(message):
    # As the review reads senders: any spelling of the client, and any unknown sender, is a client.
    return normalize_sender(message.get("sender"))[0] == "client"


class _Store:
    """The requests of one log, their recommendations and the decisions made."""

    def __init__(self, log_path, decisions_path, model):
        self.model = model
        self.log_path = Path(log_path)
        self.decisions_path = Path(decisions_path)
        rows = list(batch.read_rows([str(log_path)]))
        groups, self.orphans = group_requests(rows)
        clients = {}
        for row in rows:
            rec = row.record or {}
            rid = rec.get("request_id")
            name = next((rec[f] for f in CLIENT_FIELDS if rec.get(f) not in (None, "")), None)
            if rid not in (None, "") and name is not None:
                clients.setdefault(str(rid), str(name))
        self.requests = {}
        for rid, group in groups.items():
            messages = [{**m, "index": i} for i, m in enumerate(group["messages"])]
            result = review(messages, approved=group["approved"], model=model)
            counted = ["peer_pressure"] if group["approved"] else list(LABELS)
            times = [t for t in (_parse_time(m.get("sent_at")) for m in messages) if t is not None]
            first_client = next((m["text"] for m in messages if _is_client(m)), "")
            self.requests[rid] = {
                "id": rid,
                "messages": messages,
                "approved": group["approved"],
                "errors": group["errors"],
                "result": result,
                "risk": max((result["scores"][label]["max"] for label in counted), default=0.0),
                "client": clients.get(rid, ""),
                "date": _latest(messages, times),
                "snippet": first_client[:80] + ("…" if len(first_client) > 80 else ""),
            }
        rank = {d: i for i, d in enumerate(RECOMMENDATIONS)}
        self.decisions, self.warnings = read_decisions(self.decisions_path)
        #: Riskiest first (the recommendation, then the highest score).
        self.by_risk = sorted(self.requests, key=lambda r: (rank[self.requests[r]["result"]["decision"]], -self.requests[r]["risk"]))
        #: What a decision would teach most first: undecided before decided, then the requests whose score lies
        #: nearest a band edge of the conversation rule (review ones are between the edges).
        self.order = sorted(self.requests, key=lambda r: (self.latest(r) is not None, self._certainty(r)))
        self.lock = threading.Lock()
        self._details = {}

    def _certainty(self, rid):
        """How far the request's score lies from the rule's nearest band edge (log-odds); 0 between the edges."""
        rule = self.model.manifest.get("conversation_rule")
        score = self.requests[rid]["result"].get("request_score")
        if not rule or score is None:
            return 0.0 if self.requests[rid]["result"]["decision"] == "review" else 1.0

        def logit(p):
            p = min(max(p, 1e-6), 1 - 1e-6)
            return math.log(p / (1 - p))

        low, high = logit(rule["approve_below"]), logit(rule["deny_at"])
        return max(0.0, low - logit(score), logit(score) - high)

    def latest(self, rid):
        made = [d for d in self.decisions.get(rid, []) if d["decision"] in DECISIONS]
        return made[-1] if made else None

    def details(self, rid):
        """Per client message: scores, flagged and uncertain labels, evidence spans (computed once)."""
        with self.lock:
            if rid in self._details:
                return self._details[rid]
        req = self.requests[rid]
        client = [m for m in req["messages"] if _is_client(m)]
        out = {}
        for m, r in zip(client, self.model.score([m["text"] for m in client]) if client else []):
            doubts = r["uncertain"]  # the model's one review-band rule
            evidence = r["evidence"] + (self.model.explain(m["text"], doubts) if doubts else [])
            out[m["index"]] = {
                "scores": {label: r[label] for label in LABELS},
                "flagged": r["flagged"],
                "uncertain": doubts,
                "evidence": sorted(evidence, key=lambda e: -e["weight"]),
                "segments": highlight(m["text"], evidence, r["flagged"]),
            }
        with self.lock:
            self._details[rid] = out
        return out

    def decide(self, rid, decision, decided_by, corrections):
        """Write a decision; return it once it is on disk.

        One record for the request (``kind: request``: the decision, the
        conversation, whether it was approved), which training feeds to the
        conversation rule; then a label line per client message only where
        the moderator set a label (``corrections``: (message index, label) ->
        0|1) or, on approve, confirmed the messages clean. A deny never turns
        the model's own flags into labels: a solicitation the model scored
        under its threshold must not be recorded as 0.
        """
        req = self.requests[rid]
        if not any(_is_client(m) and m["text"].strip() for m in req["messages"]):
            raise ValueError(f"request {rid!r} has no client message to decide on")
        details = self.details(rid)
        decided_at = datetime.now().astimezone().isoformat(timespec="seconds")
        head = {"kind": "request", "request_id": rid, "decision": decision, "decided_by": decided_by, "decided_at": decided_at,
                "approved": req["approved"],
                "messages": [{"sender": m.get("sender"), "sent_at": m.get("sent_at"), "text": m["text"]} for m in req["messages"]]}
        lines, labels = [head], {}
        for m in req["messages"]:
            if not _is_client(m) or not m["text"].strip():
                continue
            set_here = {label: corrections[(m["index"], label)] for label in LABELS if corrections.get((m["index"], label)) is not None}
            if decision == "approve":
                set_here = {label: set_here.get(label, 0) for label in LABELS}
            elif not set_here:
                continue  # a deny labels no message the moderator did not touch
            # A label the moderator left as shown beside one they set is confirmed as shown.
            shown = details[m["index"]]["flagged"]
            set_here = {label: set_here.get(label, int(label in shown)) for label in LABELS}
            lines.append({"text": m["text"], **set_here, "decided_by": decided_by, "decided_at": decided_at,
                          "request_id": rid, "decision": decision, "message_id": m["id"]})
            labels[_ref(m["id"])] = set_here
        with self.lock:
            if self.decisions and not self.decisions_path.exists():
                # Someone removed the file under a running page: say so, here and in the log, then start it again.
                warning = (f"{self.decisions_path} was deleted while the page was running; a new file was started "
                           "and holds only decisions from now on")
                self.warnings.append(warning)
                print(f"warning: {warning}", file=sys.stderr, flush=True)
            else:
                warning = None
            append_decision(self.decisions_path, lines)
            made = {"decision": decision, "decided_by": decided_by, "decided_at": decided_at, "labels": labels, "warning": warning}
            self.decisions.setdefault(rid, []).append(made)
        return made


def _latest(messages, times):
    if times and len({t.tzinfo is None for t in times}) == 1:
        return max(times).strftime("%Y-%m-%d %H:%M")
    return _show_time(messages[-1].get("sent_at")) if messages else ""


# --- the app ----------------------------------------------------------------

def _moderator_name(value):
    # A name goes into the decisions file and a cookie: one printable line.
    name = "".join(c for c in str(value or "") if unicodedata.category(c)[0] != "C").strip()[:MAX_NAME]
    return name or DEFAULT_MODERATOR


def _hostname(host_header):
    """``localhost:8000`` -> ``localhost``; ``[::1]:8000`` -> ``::1``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _is_loopback(host):
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(log_path, decisions_path, model=None, token=None):
    """The review page as a Flask app.

    Parameters
    ----------
    log_path : path
        A message log (JSONL or CSV, ``.gz`` too) with ``request_id``,
        ``sender``, ``sent_at`` and ``text``; read and scored once, now.
    decisions_path : path
        The decisions file (JSONL): read now, appended to on every decision.
    model : Model, optional
        Default: the shipped model.
    token : str, optional
        When given, every request must carry it.

    Raises
    ------
    classifier.batch.BatchError
        If the log is missing or the decisions file cannot be written.
    """
    if token is not None and not token:
        raise ValueError("token must be a non-empty string or None")
    batch.check_inputs([str(log_path)])
    decisions_path = Path(decisions_path)
    if decisions_path.suffix.lower() in (".gz", ".csv"):
        raise batch.BatchError(f"decisions file {decisions_path}: expected a plain .jsonl file, got {decisions_path.suffix}")
    parent = decisions_path.parent
    if not parent.is_dir():
        raise batch.BatchError(f"decisions file {decisions_path}: no such directory {parent}")
    if not os.access(decisions_path if decisions_path.exists() else parent, os.W_OK):
        raise batch.BatchError(f"decisions file {decisions_path}: not writable")
    if model is None:
        model = load()
    elif not isinstance(model, Model):
        model = load(model)

    store = _Store(log_path, decisions_path, model)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_NAME="review_session",
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_HTTPONLY=True,
        MAX_CONTENT_LENGTH=1 << 20,
    )
    app.extensions["review_store"] = store
    app.jinja_env.filters["visible"] = visible

    @app.before_request
    def _guard():
        if token is None:
            # Only loopback names: a DNS-rebinding page (Host: evil.example) reads nothing.
            if not _is_loopback(_hostname(request.host)):
                abort(403, description="this server answers only on 127.0.0.1 or localhost")
        else:
            given = request.args.get("token")
            if given is not None:
                if not hmac.compare_digest(given.encode(), token.encode()):
                    abort(403, description="wrong token")
                # Take the token out of the address bar and history; keep it in a cookie.
                rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
                resp = redirect(request.path + ("?" + urlencode(rest) if rest else ""), 303)
                resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
                return resp
            sent = request.headers.get("X-Review-Token") or _bearer(request.headers.get("Authorization")) \
                or request.cookies.get(TOKEN_COOKIE) or ""
            if not hmac.compare_digest(sent.encode(), token.encode()):
                abort(403, description="a token is required: open the address the server printed (…?token=…)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            _check_csrf()

    @app.after_request
    def _headers(resp):
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        # same-origin keeps the Origin header on our own POSTs and the URL off other sites.
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.context_processor
    def _context():
        return {"csrf_token": _csrf_token(), "log_name": store.log_path.name, "LABELS": LABELS,
                "decisions_name": store.decisions_path.name}

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    @app.errorhandler(500)
    def _error(e):
        code = getattr(e, "code", 500) or 500
        return render_template("error.html", code=code, name=getattr(e, "name", "Error"),
                               description=getattr(e, "description", "")), code

    @app.get("/")
    def queue():
        rec, status = _filters()
        by_risk = request.args.get("order") == "risk"
        rows = [store.requests[rid] for rid in (store.by_risk if by_risk else store.order) if _matches(store, rid, rec, status)]
        counts = {d: sum(store.requests[r]["result"]["decision"] == d for r in store.order) for d in RECOMMENDATIONS}
        decided = sum(store.latest(r) is not None for r in store.order)
        total = len(store.order)
        rec_links = [(v, f"{v} {counts[v] if v in counts else total}", url_for("queue", **_nav_args(v, status)))
                     for v in ("all", *RECOMMENDATIONS)]
        status_links = [(v, f"{v} {n}", url_for("queue", **_nav_args(rec, v)))
                        for v, n in (("all", total), ("undecided", total - decided), ("decided", decided))]
        return render_template("queue.html", rows=rows, rec=rec, status=status, total=total, decided=decided,
                               rec_links=rec_links, status_links=status_links, latest=store.latest, by_risk=by_risk,
                               order_links=[("uncertain", url_for("queue", **_nav_args(rec, status))),
                                            ("risk", url_for("queue", order="risk", **_nav_args(rec, status)))],
                               orphans=store.orphans, warnings=store.warnings, nav=_nav_args(rec, status),
                               show_time=_show_time)

    @app.get("/request")
    def request_view():
        rid = request.args.get("id", "")
        if rid not in store.requests:
            abort(404, description=f"no request {rid!r} in {store.log_path.name}")
        rec, status = _filters()
        req = store.requests[rid]
        details = store.details(rid)
        history = store.decisions.get(rid, [])
        latest = store.latest(rid)
        recorded = latest["labels"] if latest else {}
        messages = [{**m, "client": _is_client(m), "detail": details.get(m["index"]), "time": _show_time(m.get("sent_at")),
                     "recorded": recorded.get(_ref(m["id"])) or recorded.get(m["text"])}
                    for m in _in_order(req["messages"])]
        return render_template(
            "request.html", req=req, result=req["result"], messages=messages, history=history, latest=latest,
            prev_id=_neighbour(store, rid, rec, status, -1), next_id=_neighbour(store, rid, rec, status, +1),
            nav=_nav_args(rec, status), moderator=_moderator_name(request.cookies.get(MODERATOR_COOKIE)),
            show_time=_show_time, can_decide=any(m["client"] and m["text"].strip() for m in messages),
        )

    @app.post("/decide")
    def decide():
        rid = request.form.get("request_id", "")
        if rid not in store.requests:
            abort(404, description=f"no request {rid!r} in {store.log_path.name}")
        decision = request.form.get("decision")
        if decision not in DECISIONS:
            abort(400, description=f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        corrections = {}
        for m in store.requests[rid]["messages"]:
            for label in LABELS:
                value = request.form.get(f"label-{m['index']}-{label}", "")
                if value in ("0", "1"):
                    corrections[(m["index"], label)] = int(value)
                elif value:
                    abort(400, description=f"label-{m['index']}-{label} must be 0, 1 or empty, got {value!r}")
        name = _moderator_name(request.form.get("decided_by"))
        try:
            made = store.decide(rid, decision, name, corrections)
        except ValueError as e:
            abort(400, description=str(e))
        except OSError as e:
            abort(500, description=f"the decision was NOT saved: {store.decisions_path}: {e.strerror or e}")
        flash(f"保存しました saved: {made['decision']} by {made['decided_by']} at {_show_time(made['decided_at'])}")
        if made.get("warning"):
            flash(f"警告 warning: {made['warning']}")
        rec, status = _filters(request.form)
        resp = redirect(url_for("request_view", id=rid, **_nav_args(rec, status)), 303)
        resp.set_cookie(MODERATOR_COOKIE, name, max_age=365 * 24 * 3600, httponly=True, samesite="Strict")
        return resp

    return app


def _bearer(value):
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def _csrf_token():
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_csrf():
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        abort(403, description=f"cross-site request refused (Origin {origin})")
    if origin is None and request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        abort(403, description="cross-site request refused")
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(403, description="the form's CSRF token is missing or stale: reload the page and try again")


def _filters(source=None):
    source = request.args if source is None else source
    rec = source.get("rec", "all")
    status = source.get("status", "all")
    return (rec if rec in RECOMMENDATIONS else "all"), (status if status in ("decided", "undecided") else "all")


def _nav_args(rec, status):
    return {k: v for k, v in (("rec", rec), ("status", status)) if v != "all"}


def _matches(store, rid, rec, status):
    if rec != "all" and store.requests[rid]["result"]["decision"] != rec:
        return False
    if status != "all" and (store.latest(rid) is not None) != (status == "decided"):
        return False
    return True


def _neighbour(store, rid, rec, status, step):
    i = store.order.index(rid) + step
    while 0 <= i < len(store.order):
        if _matches(store, store.order[i], rec, status):
            return store.order[i]
        i += step
    return None


# --- running it -------------------------------------------------------------

def _url(host, port):
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


#: Seconds a connection may stall (a request line, headers or a body trickled in) before it is closed.
READ_TIMEOUT = 20


class _TimeoutHandler(WSGIRequestHandler):
    # socketserver sets this on the connection: a stalled client cannot hold a thread for ever.
    timeout = READ_TIMEOUT


class _QuietHandler(_TimeoutHandler):
    def log_request(self, code="-", size="-"):
        pass


class _RedactingHandler(_TimeoutHandler):
    """The request log, without the token of a ``?token=`` address."""

    def log_request(self, code="-", size="-"):
        redact = re.compile(r"([?&]token=)[^&\s]*")
        self.requestline = redact.sub(r"\1…", self.requestline)
        if hasattr(self, "path"):
            self.path = redact.sub(r"\1…", self.path)
        super().log_request(code, size)


def _stop(signum, frame):
    raise KeyboardInterrupt


class BackgroundServer:
    """Serve an app from a thread (tests, screenshots): ``with BackgroundServer(app) as s: s.url``."""

    def __init__(self, app, host="127.0.0.1", port=0, quiet=True):
        self._server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler if quiet else _TimeoutHandler)
        self.port = self._server.server_port
        self.url = _url(host, self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="review-page", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(log_path, decisions_path="decisions.jsonl", *, host="127.0.0.1", port=8000, token=None, model=None):
    """Run the review page until interrupted; return the exit status.

    Raises
    ------
    classifier.batch.BatchError
        If ``host`` is not a loopback address and no (long enough) token is
        given, or the port cannot be bound.
    """
    if token is not None and len(token) < MIN_TOKEN:
        raise batch.BatchError(f"--token must have at least {MIN_TOKEN} characters, got {len(token)}; "
                               "make one with: python -c 'import secrets; print(secrets.token_urlsafe())'")
    if not _is_loopback(host) and not token:
        raise batch.BatchError(f"--host {host} is not a loopback address: anyone who can reach it would read the "
                               "messages and decide requests; give --token as well")
    app = create_app(log_path, decisions_path, model=model, token=token)
    try:
        server = make_server(host, port, app, threaded=True, request_handler=_RedactingHandler)
    except OSError as e:
        raise batch.BatchError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    url = _url(host, server.server_port) + "/" + (f"?token={token}" if token else "")
    store = app.extensions["review_store"]
    print(f"review page for {len(store.requests)} requests of {log_path}, decisions to {decisions_path}:\n  {url}\n"
          "stop with Ctrl-C", file=sys.stderr)
    # SIGTERM stops like Ctrl-C: server_close() waits for requests in flight, so a decision being written completes.
    old_term = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        server.server_close()
    return 0
