"""A recommendation per off-service contact request (サービス外連絡申請).

The rule, stored with every model as ``manifest["decision_rule"]``:

- **deny** when a client message is flagged ``off_platform`` while the request
  is not approved, or flagged ``peer_pressure``;
- **review** otherwise, when a client message's probability for a label that
  counts lies in the band ``[review_lower, threshold)``;
- **approve** otherwise.

With ``approved=True`` sharing contact details is what was approved, so
``off_platform`` no longer counts; ``peer_pressure`` still does.
"""

from collections import defaultdict

from .model import LABELS

__all__ = ["review", "REASONS", "group_requests"]

REASONS = {
    "off_platform": "外部連絡先の共有、またはサービス外でのやり取り・契約・支払いを求めています",
    "peer_pressure": "「他の人もやっている」「問題ない」などの言葉で、規約に反する行動を促しています",
    "uncertain_off_platform": "サービス外への誘導の可能性があります（確信度が低いため、目視で確認してください）",
    "uncertain_peer_pressure": "同調圧力・規約違反の正当化の可能性があります（目視で確認してください）",
    "no_findings": "問題となる表現は見つかりませんでした",
    "no_client_messages": "クライアントのメッセージがありません",
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


def review(messages, approved=False, model=None):
    """Recommend ``deny``, ``review`` or ``approve`` for one request.

    Parameters
    ----------
    messages : list of str or dict
        The conversation, oldest first. Dicts hold ``text`` and optionally
        ``id``, ``sender`` (``client``/``worker``) and ``sent_at``; when a
        sender is given, only ``client`` messages count.
    approved : bool
        The request was approved earlier: contact sharing is no longer a finding.
    model : Model

    Returns
    -------
    dict
        ``decision``, ``reasons`` (code and Japanese message), ``scores``
        (per label: highest probability and messages flagged), ``evidence``
        (the messages behind the decision, strongest first).
    """
    msgs = _messages(messages)
    client = [m for m in msgs if m.get("sender") in (None, "", "client")]
    counted = ["peer_pressure"] if approved else list(LABELS)
    results = model.score([m["text"] for m in client]) if client else []
    scores = {label: {"max": max((r[label] for r in results), default=0.0),
                      "flagged": sum(label in r["flagged"] for r in results)} for label in LABELS}

    findings, uncertain, drivers = [], [], []
    for m, r in zip(client, results):
        hits = [label for label in counted if label in r["flagged"]]
        doubts = [label for label in counted if label not in hits and r[label] >= model.review_lower[label]]
        findings += [h for h in hits if h not in findings]
        uncertain += [d for d in doubts if d not in uncertain]
        if hits or doubts:
            evidence = [e for e in r["evidence"] if e["label"] in hits]
            if doubts:
                evidence += model.explain(m["text"], doubts)
            drivers.append({
                "id": m.get("id", m["_index"]),
                "index": m["_index"],
                "sender": m.get("sender"),
                "sent_at": m.get("sent_at"),
                "text": m["text"],
                "scores": {label: r[label] for label in LABELS},
                "flagged": hits,
                "uncertain": doubts,
                "evidence": sorted(evidence, key=lambda e: -e["weight"]),
            })

    if findings:
        decision, codes = "deny", [label for label in LABELS if label in findings]
    elif uncertain:
        decision, codes = "review", [f"uncertain_{label}" for label in LABELS if label in uncertain]
    else:
        decision, codes = "approve", ["no_findings" if client else "no_client_messages"]
    drivers.sort(key=lambda d: (-len(d["flagged"]), -max(d["scores"][label] for label in counted)))
    return {
        "decision": decision,
        "reasons": [{"code": c, "message": REASONS[c]} for c in codes],
        "scores": scores,
        "evidence": drivers,
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
