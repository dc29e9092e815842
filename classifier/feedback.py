"""Moderator decisions as training labels.

A decisions file is JSONL, one decision a line, as the review page writes it::

    {"text": "...", "off_platform": 0, "peer_pressure": 1, "decided_by": "mod-03",
     "decided_at": "2026-11-21T10:02:00+09:00", "request_id": "r-1001", "decision": "deny"}

``text``, both labels (0 or 1) and ``decided_at`` (ISO 8601 with a UTC offset)
are required; ``decided_by``, ``request_id`` and any other field are kept for
the record. :func:`apply_feedback` merges decisions into the training rows
(``train.py --feedback``):

- a decision overrides the corpus label of the message with the same
  normalised text, or adds the message when the corpus lacks it;
- several decisions on one normalised text that disagree are a conflict: it
  is reported, and the latest (by ``decided_at``, then by file order) wins;
- a decision on a held-out message (a test split, an ``--eval`` file, real
  chat kept out of training) is skipped and reported, so the model is never
  trained on what it is measured on.
"""

import datetime
import json
import os
from pathlib import Path

from .data import DataError, _record, read_labelled, is_corpus, load_labelled
from .labels import LABELS
from .normalize import normalize
from .persist import sha256

__all__ = ["FeedbackFile", "apply_feedback", "read_decisions", "read_request_decisions", "holdout_of"]


class FeedbackFile(os.PathLike):
    """A decisions file, with the labelled files whose messages must stay out of training.

    :func:`classifier.training.train` hands its ``feedback`` argument to
    :func:`apply_feedback` unchanged, so ``train.py`` passes one of these to
    name its ``--eval`` files, which the training function does not know.
    It is a path everywhere else.
    """

    def __init__(self, path, holdout=()):
        self.path = Path(path)
        self.holdout = tuple(Path(p) for p in holdout)

    def __fspath__(self):
        return os.fspath(self.path)

    def __repr__(self):
        return f"FeedbackFile({str(self.path)!r}, holdout={[str(p) for p in self.holdout]})"


def _timestamp(value, where):
    if not isinstance(value, str):
        kind = "missing" if value is None else f"{type(value).__name__} {value!r}"
        raise DataError(f"{where}: 'decided_at' is {kind}, expected an ISO 8601 time such as 2026-11-21T10:02:00+09:00")
    try:
        at = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise DataError(f"{where}: 'decided_at' is {value!r}, expected an ISO 8601 time such as 2026-11-21T10:02:00+09:00") from None
    if at.tzinfo is None:
        # Naive and offset times cannot be ordered against each other, and guessing the zone could pick the wrong winner.
        raise DataError(f"{where}: 'decided_at' {value!r} has no UTC offset; expected one such as +09:00 or Z")
    return at


def read_decisions(path):
    """Validated decisions of a JSONL file, in file order.

    Returns
    -------
    list of dict
        The decision's fields, with the labels checked, plus ``_where``
        (file:line), ``_norm`` (the normalised text), ``_at`` (a datetime)
        and ``_order`` (its position in the file).

    Raises
    ------
    DataError
        For a missing or unreadable file, or the first bad line (named).
    """
    path = Path(path)
    decisions = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{where}: not JSON ({e})") from None
                if isinstance(obj, dict) and obj.get("kind") == "request":
                    continue  # a request's decision: read_request_decisions
                row = _record(obj, where, from_csv=False)
                row["_at"] = _timestamp(obj.get("decided_at"), where)
                by = obj.get("decided_by")
                if by is not None and not isinstance(by, str):
                    raise DataError(f"{where}: 'decided_by' is {type(by).__name__} {by!r}, expected a string")
                row["_norm"] = normalize(row["text"]).text
                row["_order"] = len(decisions)
                decisions.append(row)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from None
    return decisions


def read_request_decisions(path):
    """The moderators' request decisions of a decisions file, as labelled conversations for the conversation rule.

    The latest decision on a request wins. Each conversation has ``id``,
    ``decision``, ``approved``, ``messages`` and ``_writer`` ``feedback``;
    they always train (``_part``), never test.
    """
    from .data import jsonl_objects

    latest = {}
    try:
        for where, obj in jsonl_objects(path, encoding="utf-8-sig"):
            if not isinstance(obj, dict) or obj.get("kind") != "request":
                continue
            msgs = obj.get("messages")
            if obj.get("decision") not in ("deny", "approve") or not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and isinstance(m.get("text"), str) for m in msgs):
                raise DataError(f"{where}: a request decision needs decision deny/approve and a non-empty list of messages with text")
            at = _timestamp(obj.get("decided_at"), where)
            rid = str(obj.get("request_id"))
            if rid not in latest or at >= latest[rid][0]:
                latest[rid] = (at, {"id": f"feedback:{rid}", "decision": obj["decision"], "approved": obj.get("approved") is True,
                                    "messages": msgs, "_writer": "feedback", "_where": where, "_part": "train"})
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from None
    return [c for _, c in latest.values()]


def holdout_of(rows):
    """The corpus directories ``rows`` were read from: their test, held-out and evaluation parts are never trained on."""
    sources = {Path(r["_where"].rsplit(":", 1)[0]) for r in rows if r.get("_where")}
    return sorted({p.parent.parent for p in sources if is_corpus(p.parent.parent)})


def _labels(row):
    return {k: row[k] for k in LABELS}


def _brief(d):
    return {"where": d["_where"], **_labels(d), "decided_by": d.get("decided_by"), "decided_at": d.get("decided_at"),
            "request_id": d.get("request_id")}


def apply_feedback(rows, feedback, *, holdout=None):
    """Merge moderator decisions into training rows.

    Parameters
    ----------
    rows : list of dict
        Training rows as :func:`classifier.data.load_labelled` returns them
        (with ``_norm`` and ``_where``); not modified.
    feedback : path or FeedbackFile
        The decisions file.
    holdout : list of path, optional
        Labelled files whose messages must not enter training, on top of
        those of ``feedback.holdout`` and :func:`holdout_of` ``(rows)``.

    Returns
    -------
    rows : list of dict
        The training rows with labels overridden and decisions added; an
        added row has ``source`` ``"feedback"``.
    report : dict
        ``file``, ``sha256``, ``decisions`` (lines read), ``texts`` (distinct
        normalised texts), ``changed`` (corpus labels overridden), ``added``,
        ``unchanged`` (decisions that agree with the corpus), ``skipped``
        (held-out messages), ``conflicts`` (texts with disagreeing
        decisions), ``holdout`` (the files checked), and ``details`` listing
        each change, skip and conflict.

    Raises
    ------
    DataError
        For a bad decisions file or held-out file.
    """
    path = Path(os.fspath(feedback))
    decisions = read_decisions(path)
    files = list(holdout or []) + list(getattr(feedback, "holdout", ())) + holdout_of(rows)
    files = list(dict.fromkeys(Path(p) for p in files))
    held = {}
    for f in files:
        for r in (load_labelled([f], part="holdout")[0] if is_corpus(f) else read_labelled(f)):
            held.setdefault(normalize(r["text"]).text, r["_where"])

    groups = {}
    for d in decisions:
        groups.setdefault(d["_norm"], []).append(d)
    index = {(r["_norm"] if "_norm" in r else normalize(r["text"]).text): i for i, r in enumerate(rows)}
    out = list(rows)
    changed, skipped, conflicts, added, unchanged = [], [], [], 0, 0
    for norm, group in groups.items():
        winner = max(group, key=lambda d: (d["_at"], d["_order"]))
        if len({tuple(_labels(d).values()) for d in group}) > 1:
            conflicts.append({"text": winner["text"], "kept": winner["_where"], "decisions": [_brief(d) for d in group]})
        if norm in held:
            skipped.append({"text": winner["text"], "where": winner["_where"], "held_out_as": held[norm]})
            continue
        i = index.get(norm)
        if i is None:
            out.append({"text": winner["text"], **_labels(winner), "source": "feedback", "request_id": winner.get("request_id"),
                        "_norm": norm, "_where": winner["_where"]})
            added += 1
        elif _labels(out[i]) != _labels(winner):
            changed.append({"text": out[i]["text"], "corpus": out[i]["_where"], "before": _labels(out[i]),
                            "after": _labels(winner), "decision": _brief(winner)})
            out[i] = {**out[i], **_labels(winner), "_feedback": winner["_where"]}
        else:
            unchanged += 1
    report = {
        "file": str(path),
        "sha256": sha256(path),
        "decisions": len(decisions),
        "texts": len(groups),
        "changed": len(changed),
        "added": added,
        "unchanged": unchanged,
        "skipped": len(skipped),
        "conflicts": len(conflicts),
        "holdout": [str(f) for f in files],
        "details": {"changed": changed, "skipped": skipped, "conflicts": conflicts},
    }
    return out, report
