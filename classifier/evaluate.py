"""Score labelled messages with a model: the figures, the calibration, and the worst errors with their evidence.

    python -m classifier evaluate data/ [FILE ...] [--model DIR] [--json]

Everything is measured at the model's stored thresholds, the ones that flag
messages in production.
"""

from itertools import pairwise
from pathlib import Path

import numpy as np

from .data import DataError, is_corpus, load_labelled
from .model import LABELS, Model, load
from .persist import sha256
from .training import metrics_at

__all__ = ["evaluate", "format_evaluation", "labelled_files", "test_split", "model_info", "BANDS", "WORST"]

#: Edges of the calibration table's probability bands; the last band includes 1.0.
BANDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
#: Worst errors listed per label and kind.
WORST = 5


def labelled_files(paths):
    """Inputs for ``evaluate DATA``: a file is itself, a corpus directory means its test part.

    Raises
    ------
    DataError
        For a missing path, or a directory that is not a corpus.
    """
    files = []
    for p in map(Path, paths):
        if p.is_dir() and not is_corpus(p):
            raise DataError(f"{p} is a directory without written/; expected a labelled JSONL/CSV file or a corpus directory")
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
        files.append(p)
    return files


def test_split(data, evals=()):
    """The held-out set of a training run: the test part of each ``--data`` corpus directory, then the ``--eval`` files.

    Raises
    ------
    DataError
        For an ``--eval`` file that does not exist.
    """
    files = [Path(d) for d in data if is_corpus(d)]
    for e in map(Path, evals):
        if not e.is_file():
            raise DataError(f"--eval {e}: no such file (expected a labelled JSONL/CSV file)")
        files.append(e)
    return list(dict.fromkeys(files))


def model_info(model):
    """Where a model is, when it was made, and its thresholds."""
    m = model.manifest
    return {"path": str(model.path) if model.path is not None else None, "created": m.get("created"),
            "model_sha256": m.get("model_sha256"), "thresholds": dict(model.thresholds)}


def _as_model(model):
    return model if isinstance(model, Model) else load(model)


def calibration(y, p, bands=BANDS):
    """Per probability band: messages, mean predicted probability and observed positive rate."""
    y, p = np.asarray(y), np.asarray(p)
    table = []
    for i, (lo, hi) in enumerate(pairwise(bands)):
        inside = (p >= lo) & ((p <= hi) if i == len(bands) - 2 else (p < hi))
        n = int(inside.sum())
        table.append({"from": lo, "to": hi, "n": n,
                      "predicted": round(float(p[inside].mean()), 4) if n else None,
                      "observed": round(float(y[inside].mean()), 4) if n else None})
    return table


def _error(model, row, probs, label):
    return {
        "id": row.get("id"),
        "where": row["_where"],
        "text": row["text"],
        "probability": round(float(probs[LABELS.index(label)]), 6),
        "scores": {k: round(float(v), 6) for k, v in zip(LABELS, probs)},
        "gold": {k: row[k] for k in LABELS},
        # For a false positive: what made it fire. For a false negative: what little the model saw.
        "evidence": model.explain(row["text"], [label]),
    }


def evaluate(paths, model=None, *, worst=WORST, bands=BANDS):
    """Score labelled files with a model at its stored thresholds.

    Parameters
    ----------
    paths : list of path
        Labelled JSONL/CSV files (LABELING.md format), or corpus directories
        (their test part and evaluation sets). Repeated texts count once.
    model : Model or path, optional
        Default: the shipped model.
    worst : int
        How many of the most confident false negatives and false positives
        to list per label.
    bands : sequence of float
        Edges of the calibration bands.

    Returns
    -------
    dict
        ``model``, ``files`` (path and sha256), ``rows``, ``duplicates``, and
        per label under ``labels``: ``threshold``, ``metrics`` (precision,
        recall, F1, average precision, TP/FP/FN/TN), ``brier``,
        ``calibration``, ``false_negatives`` and ``false_positives`` (worst
        first, each with its text, scores, gold labels and evidence spans).

    Raises
    ------
    DataError
        For a missing path or a bad labelled file.
    ModelLoadError
        For a model that does not load.
    """
    if worst < 0:
        raise ValueError(f"worst must be 0 or more, got {worst}")
    model = _as_model(model)
    files = labelled_files(paths)
    rows, report = load_labelled(files, part="evaluation")
    probs = model.predict_proba([r["text"] for r in rows])
    labels = {}
    for k, label in enumerate(LABELS):
        y = np.array([r[label] for r in rows])
        p = probs[:, k]
        t = model.thresholds[label]
        flagged = p >= t
        fn = [i for i in np.argsort(p, kind="stable") if y[i] == 1 and not flagged[i]][:worst]
        fp = [i for i in np.argsort(-p, kind="stable") if y[i] == 0 and flagged[i]][:worst]
        labels[label] = {
            "threshold": t,
            "metrics": metrics_at(y, p, t),
            "brier": round(float(np.mean((p - y) ** 2)), 4),
            "calibration": calibration(y, p, bands),
            "false_negatives": [_error(model, rows[i], probs[i], label) for i in fn],
            "false_positives": [_error(model, rows[i], probs[i], label) for i in fp],
        }
    return {
        "model": model_info(model),
        "files": [{"path": str(f), "sha256": sha256(f) if f.is_file() else None} for f in files],
        "rows": len(rows),
        "duplicates": report["duplicates"],
        "labels": labels,
    }


def _short(text, width=70):
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _evidence(spans):
    if not spans:
        return "no evidence above the noise"
    parts = []
    for s in spans[:3]:
        shown = f"「{' '.join(s['text'].split())}」" + (f" ({' '.join(s['normalized'].split())})" if "normalized" in s else "")
        parts.append(f"{shown} {s['weight']:.2f}")
    return ", ".join(parts)


def _fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def format_evaluation(result):
    """The result of :func:`evaluate` as text for a terminal."""
    m = result["model"]
    lines = [
        f"model {m['path']} (created {m['created']})",
        "scored " + ", ".join(f["path"] for f in result["files"]) + f": {result['rows']} messages"
        + (f" ({result['duplicates']} repeated texts counted once)" if result["duplicates"] else ""),
        "",
        f"{'label':<14} {'threshold':>9} {'P':>6} {'R':>6} {'F1':>6} {'AP':>6} {'TP':>5} {'FP':>5} {'FN':>5} {'TN':>6}",
    ]
    for label, r in result["labels"].items():
        x = r["metrics"]
        lines.append(f"{label:<14} {r['threshold']:>9.4f} {x['precision']:>6.3f} {x['recall']:>6.3f} {x['f1']:>6.3f} "
                     f"{_fmt(x['average_precision']):>6} {x['tp']:>5} {x['fp']:>5} {x['fn']:>5} {x['tn']:>6}")
    for label, r in result["labels"].items():
        lines += ["", f"calibration, {label} (Brier {r['brier']:.4f})", f"  {'band':<10} {'n':>6} {'predicted':>9} {'observed':>9}"]
        for b in r["calibration"]:
            lines.append(f"  {b['from']:.1f}–{b['to']:.1f}   {b['n']:>6} {_fmt(b['predicted']):>9} {_fmt(b['observed']):>9}")
    for label, r in result["labels"].items():
        for kind, title in (("false_negatives", "missed (gold 1, not flagged), least probable first"),
                            ("false_positives", "false alarms (gold 0, flagged), most probable first")):
            errors = r[kind]
            lines += ["", f"worst {kind.replace('_', ' ')}, {label}: {title}" if errors else f"no {kind.replace('_', ' ')}, {label}"]
            for e in errors:
                lines.append(f"  p={e['probability']:.3f}  {e['id'] or e['where']}  {_short(e['text'])}")
                lines.append(f"      evidence: {_evidence(e['evidence'])}")
    return "\n".join(lines)
