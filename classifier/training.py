"""Train, cross-validate, choose thresholds and write a model directory."""

import datetime
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support
from sklearn.model_selection import StratifiedGroupKFold
from scipy.sparse import hstack

from .augment import augment
from .data import DataError, expand_paths, load_labelled, read_labelled
from .features import DEFAULT_PARAMS, build_pipeline
from .model import LABELS
from .normalize import normalize
from .persist import save_model, sha256
from .tokenize import Tokenizer

__all__ = ["train", "GRID", "TARGET_PRECISION", "REVIEW_RECALL", "CANARIES", "metrics_at"]

#: Hyper-parameters tried by cross-validation; the rest stay at DEFAULT_PARAMS.
GRID = {
    "char": [(1, 3), (1, 4)],
    "C": [4.0, 16.0, 64.0],
    "class_weight": ["balanced", None],
}
TARGET_PRECISION = 0.95
REVIEW_RECALL = 0.99
MIN_POSITIVES = 10
FOLDS = 5

#: Scored at every load: a changed tokenizer or library moves these scores.
CANARIES = [
    "LINEのIDを送るのでそちらで詳しくお話ししましょう",
    "他の人はもう仕事を始めています",
    "納品物を確認しました。ありがとうございました。",
    "ＬＩＮＥスタンプ４０個の制作をお願いします",
    "ご連絡は ｔａｒｏ＿００ ＠ ｅｘａｍｐｌｅ ． ｃｏｍ まで",
    "",
]


def _progress(message, enabled):
    if enabled:
        print(message, flush=True)


def train(data, out, *, seed=0, feedback=None, force=False, grid=None, progress=True, folds=FOLDS):
    """Train a model on labelled files and write it to ``out``.

    Parameters
    ----------
    data : list of path
        Labelled JSONL/CSV files or directories (see :func:`expand_paths`).
        A directory with a ``test.jsonl`` beside its ``train/`` folder is
        evaluated on it after training, and one with ``heldout/`` real
        negatives gets their flag rate measured.
    out : path
        The model directory to write; written in a temporary directory and
        renamed into place, so it is never half-written.
    seed : int
    feedback : path, optional
        Moderator decisions that override corpus labels (see :mod:`classifier.feedback`).
    force : bool
        Replace an existing ``out``.
    grid : dict, optional
        Hyper-parameter grid; default :data:`GRID`.

    Returns
    -------
    dict
        The manifest written.
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    started = time.time()
    rows, report = load_labelled(data)
    feedback_report = None
    if feedback:
        from .feedback import apply_feedback

        rows, feedback_report = apply_feedback(rows, feedback)
    Y = np.array([[r[k] for k in LABELS] for r in rows])
    for k, label in enumerate(LABELS):
        positives = int(Y[:, k].sum())
        if positives < MIN_POSITIVES or positives > len(rows) - MIN_POSITIVES:
            raise DataError(f"{label}: {positives} positives in {len(rows)} rows; need at least {MIN_POSITIVES} of each class")
    texts = [r["text"] for r in rows]
    _progress(f"read {len(rows)} rows ({report['duplicates']} duplicates dropped)", progress)

    variants = augment(texts, seed=seed)
    aug_texts = texts + [t for _, _, t in variants]
    aug_Y = np.vstack([Y] + [Y[[i for i, _, _ in variants]]]) if variants else Y
    groups = _writer_groups(rows)
    groups = np.concatenate([groups, groups[[i for i, _, _ in variants]]]) if variants else groups
    original = np.arange(len(aug_texts)) < len(texts)
    aug_counts = _count(name for _, names, _ in variants for name in names)
    _progress(f"augmented with {len(variants)} disguised variants", progress)

    best, search, oof = _search(aug_texts, aug_Y, groups, original, grid or GRID, seed, folds, progress)
    _progress(f"chose {best}", progress)
    params = {**DEFAULT_PARAMS, "char_ngram_min": best["char"][0], "char_ngram_max": best["char"][1],
              "C": best["C"], "class_weight": best["class_weight"]}

    probs = np.column_stack([_platt(oof[:, k], aug_Y[:, k])(oof[:, k]) for k in range(len(LABELS))])[original]
    thresholds, review_lower, cv_metrics, notes = {}, {}, {}, []
    for k, label in enumerate(LABELS):
        t, note = _threshold(Y[:, k], probs[:, k])
        thresholds[label] = t
        review_lower[label] = min(t, _recall_edge(Y[:, k], probs[:, k]))
        cv_metrics[label] = metrics_at(Y[:, k], probs[:, k], t)
        if note:
            notes.append(f"{label}: {note}")

    _progress("fitting the final model", progress)
    pipeline = build_pipeline(params, random_state=seed)
    pipeline.fit(aug_texts, aug_Y, clf__groups=groups)

    files = expand_paths(data)
    manifest = {
        "labels": list(LABELS),
        "thresholds": thresholds,
        "review_lower": review_lower,
        "decision_rule": {
            "deny": "a client message flagged off_platform while the request is not approved, or flagged peer_pressure",
            "review": "otherwise, a client message whose probability lies in [review_lower, threshold) for a label that counts",
            "approve": "otherwise",
        },
        "params": params,
        "search": search,
        "cv": {"folds": folds, "metrics": cv_metrics, "notes": notes},
        "data": {
            "files": {str(p): sha256(p) for p in files},
            "rows": len(rows),
            "duplicates_dropped": report["duplicates"],
            "label_counts": {label: int(Y[:, k].sum()) for k, label in enumerate(LABELS)},
            "sources": _count(r.get("source", "unspecified").split(":")[0] for r in rows),
        },
        "augmentation": {"seed": seed, "variants": len(variants), "by_transform": aug_counts},
        "feedback": feedback_report,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "training_seconds": round(time.time() - started, 1),
    }
    manifest.update(_held_out(pipeline, data, thresholds, review_lower))
    manifest["canaries"] = [
        {"text": text, **{label: float(p) for label, p in zip(LABELS, probs_)}}
        for text, probs_ in zip(CANARIES, pipeline.predict_proba(CANARIES))
    ]
    return _write(pipeline, manifest, out)


def _write(pipeline, manifest, out):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model directory is shared
    try:
        manifest = save_model(pipeline, tmp, manifest)
        from .card import model_card

        (tmp / "MODEL_CARD.md").write_text(model_card(manifest), encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _count(items):
    return dict(sorted(Counter(items).items()))


def _writer_groups(rows):
    """Cross-validation groups: a written slice (one writer's brief) is one
    group, so folds test on writers the model has not seen, as independent
    evaluation sets do; any other row is a group of its own."""
    keys = {}
    out = []
    for i, r in enumerate(rows):
        source = str(r.get("source", ""))
        key = source if source.startswith("written:") else i
        out.append(keys.setdefault(key, len(keys)))
    return np.array(out)


def _search(texts, Y, groups, original, grid, seed, folds, progress):
    """Cross-validate the grid; return the best config, all scores, and its out-of-fold decisions.

    Texts are normalised and tokenised once; folds keep a message and its
    disguised variants together, and are scored on original messages only.
    """
    norm = [normalize(t).text for t in texts]
    tokenizer = Tokenizer()
    tokens = {t: tokenizer(t) for t in sorted(set(norm))}
    strat = Y[:, 0] * 2 + Y[:, 1]
    with warnings.catch_warnings():
        # Small moderator files have rare label combinations; the folds are still valid.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(norm, strat, groups))
    configs = [(c, C, w) for c in grid["char"] for C in grid["C"] for w in grid["class_weight"]]
    decisions = {cfg: np.zeros(Y.shape) for cfg in configs}
    for f, (tr, te) in enumerate(splits):
        _progress(f"  fold {f + 1}/{folds}", progress)
        for char in grid["char"]:
            words = TfidfVectorizer(tokenizer=tokens.__getitem__, preprocessor=str, token_pattern=None, lowercase=False,
                                    ngram_range=(1, DEFAULT_PARAMS["word_ngram_max"]), sublinear_tf=True, min_df=2, dtype=np.float32)
            chars = TfidfVectorizer(analyzer="char", preprocessor=str, lowercase=False, ngram_range=char,
                                    sublinear_tf=True, min_df=2, dtype=np.float32)
            train_docs = [norm[i] for i in tr]
            test_docs = [norm[i] for i in te]
            X_tr = hstack([words.fit_transform(train_docs), chars.fit_transform(train_docs)]).tocsr()
            X_te = hstack([words.transform(test_docs), chars.transform(test_docs)]).tocsr()
            for c, C, w in configs:
                if c != char:
                    continue
                for k in range(Y.shape[1]):
                    lr = LogisticRegression(C=C, class_weight=w, solver="liblinear", max_iter=1000, random_state=seed)
                    decisions[(c, C, w)][te, k] = lr.fit(X_tr, Y[tr, k]).decision_function(X_te)
    search = []
    for cfg in configs:
        aps = [average_precision_score(Y[original, k], decisions[cfg][original, k]) for k in range(Y.shape[1])]
        per_fold = [np.mean([_ap(Y[te][original[te], k], decisions[cfg][te][original[te], k]) for k in range(Y.shape[1])])
                    for _, te in splits]
        search.append({"char": list(cfg[0]), "C": cfg[1], "class_weight": cfg[2],
                       "average_precision": {label: round(ap, 4) for label, ap in zip(LABELS, aps)},
                       "mean_average_precision": round(float(np.mean(aps)), 4),
                       "fold_mean": round(float(np.mean(per_fold)), 4),
                       "fold_se": round(float(np.std(per_fold) / np.sqrt(len(per_fold))), 4)})
    # One-standard-error rule: the simplest config (strongest regularisation,
    # fewest char n-grams) whose fold mean is within one SE of the best. The
    # scores are nearly flat across the grid, and a looser fit mostly learns
    # the writers' style, which flags everyday chat.
    top = max(search, key=lambda s: s["fold_mean"])
    eligible = [i for i, s in enumerate(search) if s["fold_mean"] >= top["fold_mean"] - top["fold_se"]]
    best_i = min(eligible, key=lambda i: (configs[i][1], configs[i][0][1] - configs[i][0][0], configs[i][2] is None))
    search[best_i]["chosen"] = True
    c, C, w = configs[best_i]
    return {"char": c, "C": C, "class_weight": w}, search, decisions[configs[best_i]]


def _ap(y, d):
    return average_precision_score(y, d) if y.any() else np.nan


def _platt(decision, y):
    platt = LogisticRegression(C=1e6, solver="lbfgs").fit(decision.reshape(-1, 1), y)
    a, b = platt.coef_[0, 0], platt.intercept_[0]
    return lambda d: 1.0 / (1.0 + np.exp(-(a * d + b)))


def _threshold(y, p):
    """The lowest threshold with precision >= TARGET_PRECISION (the highest recall there)."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    ok = [i for i in range(len(thresholds)) if precision[i] >= TARGET_PRECISION and recall[i] > 0]
    if ok:
        i = max(ok, key=lambda i: (recall[i], thresholds[i]))
        return float(thresholds[i]), None
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.argmax(f1[:-1]))
    return float(thresholds[i]), f"precision {TARGET_PRECISION} not reachable; threshold at best F1 (precision {precision[i]:.3f})"


def _recall_edge(y, p):
    """The highest threshold at which recall still reaches REVIEW_RECALL."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    ok = [thresholds[i] for i in range(len(thresholds)) if recall[i] >= REVIEW_RECALL]
    return float(max(ok)) if ok else float(thresholds[0])


def metrics_at(y, p, threshold):
    """Precision, recall, F1, average precision and confusion counts at a threshold."""
    y = np.asarray(y)
    pred = (np.asarray(p) >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    return {
        "precision": round(float(precision), 4),
        "recall": round(float(recall), 4),
        "f1": round(float(f1), 4),
        "average_precision": round(float(average_precision_score(y, p)), 4) if y.any() else None,
        "tp": int(((pred == 1) & (y == 1)).sum()),
        "fp": int(((pred == 1) & (y == 0)).sum()),
        "fn": int(((pred == 0) & (y == 1)).sum()),
        "tn": int(((pred == 0) & (y == 0)).sum()),
        "n": int(len(y)),
    }


def _held_out(pipeline, data, thresholds, review_lower):
    """Scores on a test split and the flag rate on real held-out chat, where the data directory has them."""
    out = {}
    for d in map(Path, data):
        if not d.is_dir():
            continue
        test = d / "test.jsonl"
        if test.is_file():
            rows = read_labelled(test)
            probs = pipeline.predict_proba([r["text"] for r in rows])
            out["test"] = {
                "file": str(test),
                "sha256": sha256(test),
                "metrics": {label: metrics_at([r[label] for r in rows], probs[:, k], thresholds[label]) for k, label in enumerate(LABELS)},
            }
        heldout = sorted((d / "heldout").glob("*.jsonl")) if (d / "heldout").is_dir() else []
        if heldout:
            rates = {}
            for path in heldout:
                rows = read_labelled(path)
                probs = pipeline.predict_proba([r["text"] for r in rows])
                flagged = (probs >= np.array([thresholds[k] for k in LABELS])).any(axis=1)
                band = ~flagged & (probs >= np.array([review_lower[k] for k in LABELS])).any(axis=1)
                rates[path.name] = {"rows": len(rows), "flagged": int(flagged.sum()), "rate": round(float(flagged.mean()), 4),
                                    "review_band": int(band.sum())}
            out["real_chat"] = rates
    return out
