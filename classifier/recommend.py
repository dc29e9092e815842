"""A recommendation per off-service contact request (サービス外連絡申請).

Every message is scored; the model's conversation rule
(:mod:`classifier.conversation`, stored as ``manifest["conversation_rule"]``)
turns the request's scores into **deny**, **review** or **approve**. It fails
closed: an empty request, or one without client messages, goes to review;
a client message flagged on its own is never approved; an unknown sender
counts as a client and is reported.

With ``approved=True`` sharing contact details is what was approved, so
``off_platform`` counts for less; ``peer_pressure`` still counts.

A model without a conversation rule (trained on messages only) falls back to
the message rule: deny when a client message is flagged, review when one
lies in its review band, approve otherwise.
"""

from collections import defaultdict

from .conversation import band, client_text, normalize_sender, request_score
from .labels import LABELS

__all__ = ["review", "REASONS", "group_requests"]

REASONS = {
    "off_platform": "外部連絡先の共有、またはサービス外でのやり取り・契約・支払いを求めています",
    "peer_pressure": "「他の人もやっている」「問題ない」などの言葉で、規約に反する行動を促しています",
    "conversation": "会話全体として、サービス外への誘導または規約違反を促す流れと判定されました",
    "uncertain_off_platform": "サービス外への誘導の可能性があります（確信度が低いため、目視で確認してください）",
    "uncertain_peer_pressure": "同調圧力・規約違反の正当化の可能性があります（目視で確認してください）",
    "uncertain_conversation": "会話全体の判定が承認と却下の間にあります（目視で確認してください）",
    "flagged_message": "単独で検出されたメッセージがあるため、自動承認はしません（目視で確認してください）",
    "no_findings": "問題となる表現は見つかりませんでした",
    "no_client_messages": "クライアントのメッセージがありません（自動承認はしません）",
    "empty": "メッセージがありません（自動承認はしません）",
}


def _messages(messages):
    if isinstance(messages, (str, bytes, dict)):
        raise TypeError(f"review expects a list of messages, got a single {type(messages).__name__}; wrap it in a list")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, str):
            m = {"text": m}
        elif not isinstance(m, dict) or not isinstance(m.get("text"), str):
            what = type(m).__name__ if not isinstance(m, dict) else f"a dict whose 'text' is {type(m.get('text')).__name__}"
            raise TypeError(f"review: message at position {i} is {what}, expected a str or a dict with a str 'text'")
        out.append({**m, "_index": i})
    return out


def _reason(code, detail=None):
    r = {"code": code, "message": REASONS[code]}
    if detail:
        r["detail"] = detail
    return r


def review(messages: list, approved: bool = False, model=None) -> dict:
    """Recommend ``deny``, ``review`` or ``approve`` for one request.

    Parameters
    ----------
    messages : list of str or dict
        The conversation, oldest first. Dicts hold ``text`` and optionally
        ``id``, ``sender`` and ``sent_at``. Senders are read loosely (case,
        spaces, クライアント/発注者/buyer, ワーカー/受注者/seller); a bare
        string or a missing or unknown sender counts as a client.
    approved : bool
        The request was approved earlier.
    model : Model

    Returns
    -------
    dict
        ``decision``, ``reasons`` (code, Japanese message, and for review a
        ``detail`` saying what is uncertain), ``request_score`` (the
        score the rule decided on; None without a rule), ``scores`` (per label over client messages:
        highest probability and number flagged), ``evidence`` (the messages
        behind the decision, strongest first, with spans), ``notes``
        (senders that were not recognised), ``approved``.
    """
    msgs = _messages(messages)
    roles, notes = [], []
    for m in msgs:
        role, known = normalize_sender(m.get("sender"))
        roles.append(role)
        if not known:
            notes.append(f"message {m['_index']}: sender {m.get('sender')!r} is not a known role; counted as a client")
    counted = ["peer_pressure"] if approved else list(LABELS)
    results = model.score([m["text"] for m in msgs]) if msgs else []
    client = [i for i, r in enumerate(roles) if r == "client"]
    scores = {label: {"max": max((results[i][label] for i in client), default=0.0),
                      "flagged": sum(label in results[i]["flagged"] for i in client)} for label in LABELS}
    hits = {i: [label for label in counted if label in results[i]["flagged"]] for i in range(len(msgs))}
    doubts = {i: [label for label in counted if label not in hits[i] and label in results[i]["uncertain"]] for i in range(len(msgs))}
    found = [label for label in LABELS if any(label in hits[i] for i in client)]
    unsure = [label for label in LABELS if any(label in doubts[i] for i in client)]

    rule = model.manifest.get("conversation_rule")
    p = None
    if not msgs:
        decision, reasons = "review", [_reason("empty")]
    elif not client:
        decision, reasons = "review", [_reason("no_client_messages")]
    elif rule:
        joined = model.predict_proba([client_text(msgs)])[0]
        p, where = request_score([[r[label] for label in LABELS] for r in results], joined, approved)
        decision = band(rule, p)
        if decision == "deny":
            reasons = [_reason(label) for label in found] or [_reason("conversation")]
        elif decision == "approve":
            reasons = [_reason("no_findings")]
        else:
            behind = "クライアントの発言をまとめて読んだ結果" if where is None else f"メッセージ {where} ({roles[where]})"
            detail = (f"最も強い兆候は{behind}で確率 {p:.2f}：承認 (< {rule['approve_below']:.2f}) と"
                      f"却下 (≥ {rule['deny_at']:.2f}) の間です"
                      + (f"；単独で検出: {', '.join(found)}" if found else "")
                      + (f"；確信度の低い検出: {', '.join(unsure)}" if unsure else ""))
            codes = (["flagged_message"] if found else []) + [f"uncertain_{label}" for label in unsure] or ["uncertain_conversation"]
            reasons = [_reason(c, detail) for c in codes]
    elif found:
        decision, reasons = "deny", [_reason(label) for label in found]
    elif unsure:
        decision, reasons = "review", [_reason(f"uncertain_{label}") for label in unsure]
    else:
        decision, reasons = "approve", [_reason("no_findings")]

    drivers = []
    for i, (m, r) in enumerate(zip(msgs, results)):
        if not (hits[i] or doubts[i]):
            continue
        evidence = [e for e in r["evidence"] if e["label"] in hits[i]]
        if doubts[i]:
            evidence += model.explain(m["text"], doubts[i])
        drivers.append({
            "id": m.get("id", m["_index"]),
            "index": m["_index"],
            "sender": roles[i],
            "sent_at": m.get("sent_at"),
            "text": m["text"],
            "scores": {label: r[label] for label in LABELS},
            "flagged": hits[i],
            "uncertain": doubts[i],
            "evidence": sorted(evidence, key=lambda e: -e["weight"]),
        })
    drivers.sort(key=lambda d: (d["sender"] != "client", -len(d["flagged"]), -max(d["scores"][label] for label in counted)))
    return {
        "decision": decision,
        "reasons": reasons,
        "request_score": None if p is None else round(p, 6),
        "scores": scores,
        "evidence": drivers,
        "notes": notes,
        "approved": bool(approved),
    }


def _truthy(value):
    return value is True or (isinstance(value, (int, float)) and value == 1) or (
        isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "approved", "承認"))


def group_requests(rows, *, group_field="request_id", approved_field="approved", text_field="text"):
    """Group log rows by request, in order of first appearance.

    Returns
    -------
    groups : dict
        request id -> {"messages": [...], "approved": bool, "errors": [...]}
    orphans : list
        Errors for rows that name no request or cannot be read.
    """
    groups = defaultdict(lambda: {"messages": [], "approved": False, "errors": []})
    orphans = []
    for row in rows:
        rec = row.record
        key = rec.get(group_field) if rec is not None else None
        if row.error or key in (None, ""):
            orphans.append({"line": row.line, "source": row.source,
                            "error": row.error or f"no {group_field!r} field"})
            continue
        key = str(key)
        group = groups[key]
        text = rec.get(text_field)
        if not isinstance(text, str):
            got = "missing" if text_field not in rec else type(text).__name__
            group["errors"].append({"line": row.line, "id": rec.get("id"), "error": f"{text_field!r} is {got}, expected a string"})
            continue
        group["approved"] = group["approved"] or _truthy(rec.get(approved_field))
        group["messages"].append({"text": text, "id": rec.get("id", row.line), "sender": rec.get("sender"),
                                  "sent_at": rec.get("sent_at")})
    return dict(groups), orphans
