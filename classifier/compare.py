"""Compare a new model with the one it would replace, promote it only if it is no worse, roll back.

    python train.py --data data/ --out models/candidate --compare models/default --promote
    python -m classifier rollback

:func:`compare` scores one held-out set with both models, each at its own
stored thresholds, and lists the messages whose flagged labels change (and,
given a message log, the requests whose review decision changes).
:func:`promote` copies a model over the target only when no label's F1 on the
held-out set drops by more than a tolerance, keeping the replaced model beside
it; :func:`rollback` swaps them back.
"""

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .data import DataError, load_labelled
from .errors import ClassifierError
from .fsutil import recover_dir, replace_dir, swap_dirs
from .evaluate import model_info
from .model import LABELS, Model, default_model_path, load
from .normalize import normalize
from .persist import MANIFEST_FILE, sha256
from .training import metrics_at

__all__ = ["compare", "write_comparison", "comparison_markdown", "comparison_summary", "promote", "rollback",
           "promotion_summary", "rollback_summary", "previous_path", "PromotionError", "PromotionRefused", "TOLERANCE"]

#: How much a label's held-out F1 may drop before a promotion is refused.
TOLERANCE = 0.01
#: Flips and requests listed in COMPARISON.md; comparison.json has them all.
MD_ROWS = 50
PROMOTION_FILE = "PROMOTED.json"


class PromotionError(ClassifierError):
    """A promotion or rollback that cannot be done: a missing model, a stale comparison."""


class PromotionRefused(PromotionError):
    """The comparison says the new model is worse than the one it would replace."""


def _as_model(model):
    return model if isinstance(model, Model) else load(model)


def _flagged(model, probs):
    return [label for label, p in zip(LABELS, probs) if p >= model.thresholds[label]]


def _flip(old, new, p_old, p_new, gold):
    """The change in flagged labels of one message, or None when there is none."""
    was, now = _flagged(old, p_old), _flagged(new, p_new)
    if was == now:
        return None
    gained = [k for k in now if k not in was]
    lost = [k for k in was if k not in now]
    effect = None
    if gold is not None:
        right = [(k in now) == bool(gold[k]) for k in gained + lost]
        effect = "fixed" if all(right) else "broken" if not any(right) else "mixed"
    return {
        "gold": gold,
        "old": {**{k: round(float(p), 6) for k, p in zip(LABELS, p_old)}, "flagged": was},
        "new": {**{k: round(float(p), 6) for k, p in zip(LABELS, p_new)}, "flagged": now},
        "gained": gained,
        "lost": lost,
        "effect": effect,
    }


def _flip_order(item):
    # Regressions first, then the biggest moves.
    rank = {"broken": 0, "mixed": 1, "fixed": 2, None: 3}[item["effect"]]
    move = max(abs(item["new"][k] - item["old"][k]) for k in LABELS)
    return rank, -move


def compare(new, old, heldout, *, log=None, tolerance=TOLERANCE, group_field="request_id", approved_field="approved"):
    """Score one held-out set with two models and report what changes.

    Parameters
    ----------
    new, old : Model or path
        The candidate and the model it would replace.
    heldout : list of path
        Labelled files never trained on (see :func:`classifier.evaluate.test_split`).
    log : path, optional
        A message log (JSONL/CSV) with request ids: the requests whose
        review decision changes are listed.
    tolerance : float
        The largest F1 drop per label the promotion gate accepts.

    Returns
    -------
    dict
        ``new`` and ``old`` (path, created, sha256, thresholds), ``heldout``
        (files and rows), ``metrics`` (per label: ``old``, ``new``, ``diff``
        = new − old), ``gate`` (``tolerance``, ``passed``, ``drops``,
        ``failing``), ``flips`` (counts and ``items``, worst first) and, with
        a log, ``log`` (message flips and ``requests`` whose decision changes).

    Raises
    ------
    DataError
        For an empty held-out set or a bad labelled file.
    ModelLoadError
        For a model that does not load.
    """
    if not heldout:
        raise DataError("no held-out set to compare on: expected a corpus --data directory (its test part), or --eval FILE")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    new, old = _as_model(new), _as_model(old)
    rows, report = load_labelled(heldout, part="evaluation")
    texts = [r["text"] for r in rows]
    p_old, p_new = old.predict_proba(texts), new.predict_proba(texts)

    metrics = {}
    for k, label in enumerate(LABELS):
        y = [r[label] for r in rows]
        a, b = metrics_at(y, p_old[:, k], old.thresholds[label]), metrics_at(y, p_new[:, k], new.thresholds[label])
        diff = {key: (round(b[key] - a[key], 4) if a[key] is not None and b[key] is not None else None)
                for key in ("precision", "recall", "f1", "average_precision", "tp", "fp", "fn", "tn")}
        metrics[label] = {"old": a, "new": b, "diff": diff}
    drops = {label: round(metrics[label]["old"]["f1"] - metrics[label]["new"]["f1"], 4) for label in LABELS}
    failing = [label for label in LABELS if drops[label] > tolerance]

    flips = []
    for r, a, b in zip(rows, p_old, p_new):
        f = _flip(old, new, a, b, {k: r[k] for k in LABELS})
        if f:
            flips.append({"id": r.get("id"), "where": r["_where"], "text": r["text"], **f})
    flips.sort(key=_flip_order)
    result = {
        "new": model_info(new),
        "old": model_info(old),
        "heldout": {"files": [{"path": str(f) + ("/ (test part and eval/)" if Path(f).is_dir() else ""),
                               "sha256": None if Path(f).is_dir() else sha256(f)} for f in heldout], "rows": len(rows),
                    "duplicates": report["duplicates"]},
        "metrics": metrics,
        "gate": {"metric": "f1", "tolerance": tolerance, "passed": not failing, "drops": drops, "failing": failing},
        "flips": _counted(flips),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if log is not None:
        gold = {r["_norm"]: {k: r[k] for k in LABELS} for r in rows}
        result["log"] = _compare_log(new, old, log, gold, group_field, approved_field)
    return result


def _counted(items):
    effects = [i["effect"] for i in items]
    return {"count": len(items), "fixed": effects.count("fixed"), "broken": effects.count("broken"),
            "mixed": effects.count("mixed"), "unknown": effects.count(None), "items": items}


def _compare_log(new, old, log, gold, group_field, approved_field):
    from .batch import BatchError, check_inputs, read_rows
    from .recommend import group_requests, review

    try:
        check_inputs([str(log)])
    except BatchError as e:
        raise DataError(f"--log: {e}") from None
    groups, orphans = group_requests(read_rows([str(log)]), group_field=group_field, approved_field=approved_field)
    messages = [(rid, m) for rid, g in groups.items() for m in g["messages"]]
    texts = [m["text"] for _, m in messages]
    p_old = old.predict_proba(texts) if texts else np.zeros((0, len(LABELS)))
    p_new = new.predict_proba(texts) if texts else np.zeros((0, len(LABELS)))
    flips = []
    for (rid, m), a, b in zip(messages, p_old, p_new):
        f = _flip(old, new, a, b, gold.get(normalize(m["text"]).text))
        if f:
            flips.append({group_field: rid, "id": m.get("id"), "sender": m.get("sender"), "text": m["text"], **f})
    flips.sort(key=_flip_order)
    changed, counts = [], {"old": {}, "new": {}}
    for rid, g in groups.items():
        a = review(g["messages"], approved=g["approved"], model=old)
        b = review(g["messages"], approved=g["approved"], model=new)
        for side, r in (("old", a), ("new", b)):
            counts[side][r["decision"]] = counts[side].get(r["decision"], 0) + 1
        if a["decision"] != b["decision"]:
            changed.append({group_field: rid, "approved": g["approved"], "messages": len(g["messages"]),
                            "old": {"decision": a["decision"], "reasons": [x["code"] for x in a["reasons"]]},
                            "new": {"decision": b["decision"], "reasons": [x["code"] for x in b["reasons"]]}})
    return {
        "file": str(log),
        "group_field": group_field,
        "messages": len(messages),
        "requests": len(groups),
        "rows_with_errors": sum(len(g["errors"]) for g in groups.values()) + len(orphans),
        "decisions": counts,
        "flips": _counted(flips),
        "changed": changed,
    }


def write_comparison(comparison, directory):
    """Write ``COMPARISON.md`` and ``comparison.json`` into ``directory``; return their paths."""
    directory = Path(directory)
    md, js = directory / "COMPARISON.md", directory / "comparison.json"
    md.write_text(comparison_markdown(comparison), encoding="utf-8")
    with open(js, "w", encoding="utf-8") as f:
        json.dump(comparison, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return md, js


def _cell(text, width=90):
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(value, spec=".3f", sign=False):
    if value is None:
        return "-"
    return format(value, ("+" if sign else "") + spec)


def _gold(gold):
    return "unknown" if gold is None else " ".join(f"{k}={gold[k]}" for k in LABELS)


def _probs(side):
    return " / ".join(f"{side[k]:.3f}" for k in LABELS)


def _change(flip):
    parts = [f"+{k}" for k in flip["gained"]] + [f"−{k}" for k in flip["lost"]]
    return " ".join(parts) + (f" ({flip['effect']})" if flip["effect"] else "")


def _gate_line(gate):
    if gate["passed"]:
        return f"passed: no label's F1 drops by more than {gate['tolerance']}."
    worst = ", ".join(f"{k} F1 −{gate['drops'][k]:.4f}" for k in gate["failing"])
    return f"failed: {worst}, more than the tolerance {gate['tolerance']}."


def comparison_markdown(c):
    """COMPARISON.md: the comparison for a moderator."""
    files = ", ".join(f"`{f['path']}`" for f in c["heldout"]["files"])
    parts = [
        "# Comparison before replacing a model",
        "",
        f"- new: `{c['new']['path']}` (created {c['new']['created']})",
        f"- old: `{c['old']['path']}` (created {c['old']['created']})",
        f"- held-out set: {c['heldout']['rows']} messages from {files}, never trained on",
        "",
        "Each model is measured at its own stored thresholds; difference = new − old.",
        "",
        "| label | metric | old | new | difference |",
        "|---|---|---|---|---|",
    ]
    for label, m in c["metrics"].items():
        parts.append(f"| {label} | threshold | {c['old']['thresholds'][label]:.4f} | {c['new']['thresholds'][label]:.4f} | |")
        for key, name in (("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("average_precision", "average precision")):
            parts.append(f"| {label} | {name} | {_num(m['old'][key])} | {_num(m['new'][key])} | {_num(m['diff'][key], sign=True)} |")
        for key in ("tp", "fp", "fn", "tn"):
            parts.append(f"| {label} | {key.upper()} | {m['old'][key]} | {m['new'][key]} | {m['diff'][key]:+d} |")
    parts += ["", "## Promotion gate", "", _gate_line(c["gate"])]
    parts += _flip_section("Flips on the held-out set", c["flips"], "The messages whose flagged labels change, new model "
                           "against old (probabilities old → new, off_platform / peer_pressure); regressions first.")
    if "log" in c:
        lg = c["log"]
        parts += ["", f"## Message log `{lg['file']}`", "",
                  f"{lg['messages']} messages in {lg['requests']} requests ({lg['rows_with_errors']} rows with errors). "
                  "Decisions old: " + ", ".join(f"{k} {v}" for k, v in sorted(lg["decisions"]["old"].items()))
                  + "; new: " + ", ".join(f"{k} {v}" for k, v in sorted(lg["decisions"]["new"].items())) + ".",
                  "", f"### Requests whose review decision changes ({len(lg['changed'])})", ""]
        if lg["changed"]:
            parts += ["| request | approved | old | new | reasons old → new |", "|---|---|---|---|---|"]
            for r in lg["changed"][:MD_ROWS]:
                parts.append(f"| {_cell(r[lg['group_field']])} | {r['approved']} | {r['old']['decision']} | {r['new']['decision']} | "
                             f"{', '.join(r['old']['reasons'])} → {', '.join(r['new']['reasons'])} |")
            if len(lg["changed"]) > MD_ROWS:
                parts.append(f"\n… and {len(lg['changed']) - MD_ROWS} more in comparison.json.")
        else:
            parts.append("None.")
        parts += _flip_section("Message flips in the log", lg["flips"], "Gold labels are known where the text is in the held-out set.",
                               level="###")
    parts.append("")
    return "\n".join(parts)


def _flip_section(title, flips, intro, level="##"):
    heading = (f"{level} {title} ({flips['count']}: {flips['fixed']} fixed, {flips['broken']} broken, "
               f"{flips['mixed']} mixed, {flips['unknown']} without gold label)")
    parts = ["", heading, "", intro, ""]
    if not flips["items"]:
        return parts + ["None."]
    parts += ["| message | gold | old | new | change |", "|---|---|---|---|---|"]
    for f in flips["items"][:MD_ROWS]:
        parts.append(f"| {_cell(f['text'])} | {_gold(f['gold'])} | {_probs(f['old'])} | {_probs(f['new'])} | {_change(f)} |")
    if flips["count"] > MD_ROWS:
        parts.append(f"\n… and {flips['count'] - MD_ROWS} more in comparison.json.")
    return parts


def comparison_summary(c):
    """A few lines for the terminal."""
    lines = [f"compared with {c['old']['path']} on {c['heldout']['rows']} held-out messages (new − old):",
             f"{'label':<14} {'F1 old':>7} {'F1 new':>7} {'diff':>7} {'AP diff':>8}"]
    for label, m in c["metrics"].items():
        lines.append(f"{label:<14} {m['old']['f1']:>7.3f} {m['new']['f1']:>7.3f} {m['diff']['f1']:>+7.3f} "
                     f"{_num(m['diff']['average_precision'], sign=True):>8}")
    f = c["flips"]
    lines.append(f"flips: {f['count']} ({f['fixed']} fixed, {f['broken']} broken, {f['mixed']} mixed)")
    if "log" in c:
        lines.append(f"log: {len(c['log']['changed'])} of {c['log']['requests']} requests change decision")
    lines.append("gate " + _gate_line(c["gate"]))
    return "\n".join(lines)


def previous_path(target):
    """Where the model a promotion replaces is kept: ``models/previous`` for ``models/default``, else ``DIR-previous``."""
    target = Path(target)
    return target.with_name("previous" if target.name == "default" else f"{target.name}-previous")


def _sha_of(directory):
    try:
        with open(Path(directory) / MANIFEST_FILE, encoding="utf-8") as f:
            return json.load(f).get("model_sha256")
    except (OSError, ValueError):
        return None


def _hidden(path, tag):
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{tag}.", dir=path.parent))


def promote(src, target=None, *, comparison=None, force=False):
    """Copy a model directory over ``target``, keeping the replaced model at :func:`previous_path`.

    The copy is made in a hidden directory beside the target and verified
    (hash, contents, canaries) before one atomic exchange swaps it in
    (:func:`classifier.fsutil.replace_dir`), so the target is never
    half-written nor absent.

    Parameters
    ----------
    src : path
        The new model directory.
    target : path, optional
        Default: the model the classifier loads (``$CLASSIFIER_MODEL`` or
        ``models/default``).
    comparison : dict, optional
        :func:`compare` of ``src`` against ``target``; required when
        ``target`` holds a model.
    force : bool
        Promote although the comparison's gate failed (recorded).

    Returns
    -------
    dict
        The record also written to ``PROMOTED.json`` in the target:
        ``target``, ``source``, ``previous`` (None when nothing was
        replaced), ``forced``, ``gate``, ``promoted_at``.

    Raises
    ------
    PromotionRefused
        When the gate failed and ``force`` is false.
    PromotionError
        For a missing comparison, a comparison of other models, or ``src``
        being the target.
    ModelLoadError
        When the copy does not verify.
    """
    src = Path(src)
    target = Path(target) if target is not None else default_model_path()
    previous = previous_path(target)
    recover_dir(target)
    if not (src / MANIFEST_FILE).is_file():
        raise PromotionError(f"{src} is not a model directory: no {MANIFEST_FILE}")
    if target.exists() and src.resolve() == target.resolve():
        raise PromotionError(f"{src} is the promotion target itself")
    replaces = target.exists()
    if replaces and not (target / MANIFEST_FILE).is_file():
        raise PromotionError(f"{target} exists but is not a model directory (no {MANIFEST_FILE}); remove it or promote elsewhere")
    gate = comparison["gate"] if comparison else None
    if replaces:
        if comparison is None:
            raise PromotionError(f"{target} holds a model; promotion needs a comparison with it (train.py --compare {target})")
        if comparison["old"]["model_sha256"] != _sha_of(target) or comparison["new"]["model_sha256"] != _sha_of(src):
            raise PromotionError(f"the comparison is of {comparison['new']['path']} against {comparison['old']['path']}, "
                                 f"not of {src} against the model now at {target}; compare again")
        if not gate["passed"] and not force:
            raise PromotionRefused(f"{_gate_line(gate)} {target} is unchanged; pass --force-promote to promote anyway")
    record = {
        "target": str(target),
        "source": str(src.resolve()),
        "source_sha256": _sha_of(src),
        "previous": str(previous) if replaces else None,
        "forced": bool(replaces and not gate["passed"]),
        "gate": gate,
        "promoted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden(target, "incoming")
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model directory is shared
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        with open(tmp / PROMOTION_FILE, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False, indent=2)
            f.write("\n")
        load(tmp)  # a copy that does not verify never replaces anything
        # One atomic exchange puts the new model in place; the old one then goes to previous.
        replace_dir(tmp, target, keep=previous)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def rollback(target=None):
    """Put the model a promotion replaced back at ``target``; the rolled-back model becomes the previous one.

    Running it twice therefore undoes the rollback.

    Parameters
    ----------
    target : path, optional
        Default: the model the classifier loads (``$CLASSIFIER_MODEL`` or
        ``models/default``); the previous model is at :func:`previous_path`.

    Returns
    -------
    dict
        ``target``, ``restored_from``, ``now_previous`` (None when the
        target was empty), ``restored`` (created and sha256 of the model now
        in place).

    Raises
    ------
    PromotionError
        When there is no previous model.
    ModelLoadError
        When the previous model does not verify; nothing is moved.
    """
    target = Path(target) if target is not None else default_model_path()
    previous = previous_path(target)
    recover_dir(target)
    if not previous.exists():
        raise PromotionError(f"no previous model at {previous}: nothing to roll back to")
    restored = load(previous)  # never put back a model that does not load
    had_target = target.exists()
    # Exchange the two directories in one step; a crash leaves both in place.
    if had_target:
        swap_dirs(previous, target)
    else:
        replace_dir(previous, target)
    hold = had_target
    return {"target": str(target), "restored_from": str(previous), "now_previous": str(previous) if hold else None,
            "restored": {"created": restored.manifest.get("created"), "model_sha256": restored.manifest.get("model_sha256")}}


def promotion_summary(record):
    """One or two lines about a promotion."""
    line = f"promoted {record['source']} to {record['target']}"
    if record["previous"]:
        line += f"; the replaced model is kept in {record['previous']} (python -m classifier rollback restores it)"
    if record["forced"]:
        line += f"\nforced with --force-promote although the gate {_gate_line(record['gate'])}"
    elif record["gate"] is None:
        line += f"\n{record['target']} held no model: nothing compared"
    return line


def rollback_summary(record):
    """One line about a rollback."""
    line = f"restored {record['target']} from {record['restored_from']} (model created {record['restored']['created']})"
    if record["now_previous"]:
        line += f"; the rolled-back model is now in {record['now_previous']} (run rollback again to undo)"
    return line
