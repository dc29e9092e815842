"""The conversation layer: one decision per off-service contact request.

Every message of a request is scored by the message model; a moderator
decides on the whole conversation. The request's score is the highest
calibrated probability of a label that counts, over every message (a worker
who solicits is as much a finding as a client) and over the client's
messages read together (so that a handle split over two messages is seen);
``off_platform`` does not count once the request was approved. Two bands,
tuned on labelled conversations, turn the score into

- **deny** at or above ``deny_at``;
- **approve** below ``approve_below`` (never above a message threshold, so a
  message flagged on its own is never approved);
- **review** otherwise, and whenever the request is empty or has no client
  message (fail closed).

A learned combination of the aggregates (logistic regression over the
maximum, noisy-OR, per-sender maxima and the joined text) was tried first: on
writer-grouped folds it shifted with each writer's register and approved
scams whose one finding was a worker's message; the plain maximum is as
separating and does not move with the writer. The rule is plain numbers,
stored in the model's manifest (``conversation_rule``) with its
cross-validated and test confusion tables.
"""

import hashlib
import math
from pathlib import Path

import numpy as np

from .errors import DataError
from .labels import LABELS

__all__ = ["SENDERS", "normalize_sender", "client_text", "request_score", "band", "fit_rule", "read_conversations", "rule_card",
           "TEST_SHARE", "CLEAN_DENIED", "MARGIN"]

#: Sender spellings and what they mean; anything else counts as a client and is reported.
SENDERS = {
    "client": "client", "クライアント": "client", "発注者": "client", "buyer": "client", "依頼者": "client",
    "customer": "client", "employer": "client",
    "worker": "worker", "ワーカー": "worker", "受注者": "worker", "seller": "worker", "freelancer": "worker",
    "contractor": "worker", "ランサー": "worker",
}
#: Percent of the conversations kept as their test part (by a hash of the id).
TEST_SHARE = 20
#: deny_at: the lowest score at which at most this share of clean requests is denied.
CLEAN_DENIED = 0.02
#: approve_below: this far under the lowest-scoring scam of the tuning set.
MARGIN = 0.1


def normalize_sender(value):
    """``(role, known)``: ``client`` or ``worker``; an unknown or missing sender is a client, ``known`` False."""
    if isinstance(value, str):
        key = "".join(value.split()).lower()
        if key in SENDERS:
            return SENDERS[key], True
    return "client", False


def client_text(messages):
    """The client's messages of a request read as one text (a handle split over two messages is seen whole)."""
    return "\n".join(m["text"] for m in messages if normalize_sender(m.get("sender"))[0] == "client")


def request_score(probs, joined, approved):
    """The request's score and the message behind it (None: the joined client text).

    Parameters
    ----------
    probs : array, shape (n_messages, 2)
        Each message's probability per label, columns in LABELS order.
    joined : array, shape (2,)
        The probabilities of the client's messages read as one text.
    approved : bool
        ``off_platform`` no longer counts.
    """
    counted = [k for k, label in enumerate(LABELS) if not (approved and label == "off_platform")]
    probs = np.asarray(probs, dtype=float).reshape(-1, len(LABELS))[:, counted]
    best, where = float(np.max(np.asarray(joined)[counted])), None
    if len(probs) and probs.max() >= best:
        best, where = float(probs.max()), int(np.unravel_index(probs.argmax(), probs.shape)[0])
    return best, where


def band(rule, score):
    """deny / review / approve for a request's score."""
    if score >= rule["deny_at"]:
        return "deny"
    if score < rule["approve_below"]:
        return "approve"
    return "review"


def read_conversations(paths):
    """Labelled conversations (``data/conversations/*.jsonl``): one request a line, validated.

    Each has ``id``, ``decision`` (deny/approve), ``approved`` and
    ``messages`` (``sender``, ``text``); the writer is the file.
    """
    from .data import jsonl_objects

    out = []
    for path in map(Path, paths):
        for where, c in jsonl_objects(path):
            if not isinstance(c, dict) or c.get("decision") not in ("deny", "approve"):
                raise DataError(f"{where}: expected an object with decision 'deny' or 'approve'")
            msgs = c.get("messages")
            if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and isinstance(m.get("text"), str) for m in msgs):
                raise DataError(f"{where}: 'messages' must be a non-empty list of objects with a text")
            c["approved"] = c.get("approved") is True
            c["_writer"] = path.stem
            c["_where"] = where
            out.append(c)
    return out


def part_of(conversation_id):
    """``test`` for TEST_SHARE percent of the conversations (by a hash of the id), else ``train``."""
    h = int(hashlib.sha256(str(conversation_id).encode("utf-8")).hexdigest(), 16) % 100
    return "test" if h < TEST_SHARE else "train"


def scores(model, conversations):
    """Each labelled conversation's request score under ``model``."""
    texts, owners, joined = [], [], []
    for i, c in enumerate(conversations):
        texts += [m["text"] for m in c["messages"]]
        owners += [i] * len(c["messages"])
        joined.append(client_text(c["messages"]))
    probs, joined_p, owners = model.predict_proba(texts), model.predict_proba(joined), np.array(owners)
    return np.array([request_score(probs[owners == i], joined_p[i], c["approved"])[0] for i, c in enumerate(conversations)])


def tune(s, y, thresholds):
    """Bands from request scores ``s`` and gold decisions ``y`` (1 = deny); never above a message threshold."""
    clean, scam = np.sort(s[y == 0])[::-1], np.sort(s[y == 1])
    k = int(math.floor(CLEAN_DENIED * len(clean)))
    deny_at = float(np.nextafter(clean[k], 1.0)) if k < len(clean) else 0.5
    deny_at = min(max(deny_at, 1e-6), 1 - 1e-6)
    approve_below = min(float(scam[0]) - MARGIN if len(scam) else 0.5, min(thresholds), deny_at)
    return {"deny_at": deny_at, "approve_below": max(approve_below, 1e-6)}


def _table(decisions, y):
    """Confusion table: per gold decision, how many went to each band."""
    out = {}
    for gold, name in ((1, "scam"), (0, "clean")):
        d = [dec for dec, t in zip(decisions, y) if t == gold]
        out[name] = {"n": len(d), **{k: sum(x == k for x in d) for k in ("approve", "review", "deny")}}
    return out


def fit_rule(model, conversations):
    """Tune the bands on the train part, cross-validate them by writer, and measure the test part.

    Returns
    -------
    dict
        ``deny_at``, ``approve_below``, ``cv`` (each writer's conversations
        decided with bands tuned on the other writers) and ``test`` tables.
    """
    train = [c for c in conversations if c.get("_part", part_of(c["id"])) == "train"]
    test = [c for c in conversations if c.get("_part", part_of(c["id"])) == "test"]
    y = np.array([c["decision"] == "deny" for c in train], dtype=int)
    writers = np.array([c["_writer"] for c in train])
    if len(set(writers)) < 2 or y.sum() < 5 or (1 - y).sum() < 5:
        raise DataError(f"conversation rule: {len(train)} conversations from {len(set(writers))} writers; "
                        "need two writers and five of each decision")
    cut = [model.thresholds[label] for label in LABELS]
    s = scores(model, train)
    cv = np.empty(len(train), dtype=object)
    for w in sorted(set(writers)):
        bands = tune(s[writers != w], y[writers != w], cut)
        cv[writers == w] = [band(bands, x) for x in s[writers == w]]
    rule = tune(s, y, cut)
    rule["cv"] = _table(list(cv), y)
    if test:
        yt = np.array([c["decision"] == "deny" for c in test], dtype=int)
        rule["test"] = _table([band(rule, x) for x in scores(model, test)], yt)
    rule["conversations"] = {"train": len(train), "test": len(test), "writers": sorted(set(writers.tolist()))}
    return rule


def rule_card(rule):
    """The model card's section on the conversation rule."""
    lines = ["## Conversation rule (request decisions)", "",
             "A request's score is the highest probability of a label that counts over its messages (any sender) and "
             "over the client's messages read together (`off_platform` does not count once the request was approved). "
             f"Deny at ≥ {rule['deny_at']:.3f}; approve below {rule['approve_below']:.3f}; review otherwise, and always "
             "for an empty request or one without client messages. The bands are tuned on "
             f"{rule['conversations']['train']} labelled conversations by {len(rule['conversations']['writers'])} writers "
             f"(deny where at most {CLEAN_DENIED:.0%} of clean requests would be; approve {MARGIN} under the lowest scam); "
             "the cross-validated rows decide each writer's conversations with bands tuned on the other writers; "
             f"the test part ({rule['conversations']['test']} conversations) was never tuned on.",
             "", "| set | gold | n | approved | review | denied |", "|---|---|---|---|---|---|"]
    for name in ("cv", "test"):
        for gold, row in rule.get(name, {}).items():
            n = max(row["n"], 1)
            lines.append(f"| {'cross-validated by writer' if name == 'cv' else 'test part'} | {gold} | {row['n']} | "
                         f"{row['approve']} ({row['approve'] / n:.0%}) | {row['review']} ({row['review'] / n:.0%}) | "
                         f"{row['deny']} ({row['deny'] / n:.0%}) |")
    return lines
