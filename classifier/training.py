"""Train: search, out-of-fold thresholds, fit, measure, write a model directory.

1. Labelled rows are read and checked (enough rows and positives for the
   folds, a writable output) before any work starts.
2. Seeded disguised variants of about half the messages are added
   (:mod:`classifier.augment`); a message and its variants share a group.
3. ``GridSearchCV`` picks the hyper-parameters on writer-grouped folds
   (``StratifiedGroupKFold``; one written slice = one group), by mean average
   precision over the labels, with the one-standard-error rule as ``refit``;
   real everyday chat weighs REAL_WEIGHT written messages.
4. The shipped pipeline's own out-of-fold probabilities (``cross_val_predict``
   of the chosen, calibrated pipeline on the same folds) give each label's
   threshold and review edge: the thresholds mean on the shipped scorer what
   the model card says.
5. The pipeline is fitted on everything, measured on the held-out parts, and
   written atomically with its manifest and card.
"""

import datetime
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from .augment import augment
from .data import DataError, expand_paths, is_corpus, load_labelled
from .estimator import DEFAULT_PARAMS, build_pipeline
from .labels import LABELS
from .errors import ClassifierError
from .features import TextReader
from .fsutil import recover_dir, replace_dir
from .persist import save_model, sha256

__all__ = ["train", "GRID", "TARGET_PRECISION", "REAL_CHAT_RATE", "REVIEW_RECALL", "CANARIES", "metrics_at",
           "choose_threshold", "review_edge", "one_standard_error", "FOLDS", "SHORT"]

#: Hyper-parameters tried by the search; listed simplest first (the one-SE rule prefers earlier values).
GRID = {
    "clf__C": [1.0, 4.0, 16.0],
    "features__char_ngram_range": [(1, 2), (1, 3)],
    "clf__class_weight": ["balanced", None],
}
#: A label's threshold: the highest out-of-fold recall at this precision ...
TARGET_PRECISION = 0.90
#: ... while flagging at most this share of the real everyday chat trained on (out of fold).
REAL_CHAT_RATE = 0.003
#: Real everyday chat weighs this many written messages in training: the stream the model serves is mostly
#: such chat, and its "みんな" and "LINE" are benign. (Writer-grouped cross-validation: at 1, 4, 10 and 20,
#: recall at precision 0.90 moved 0.89 → 0.88 (off_platform) and 0.82 → 0.79 (peer_pressure) while the
#: keyword-chosen real chat flagged fell from 1.1 % / 1.0 % to 0.5 % / 0.4 %.)
REAL_WEIGHT = 8.0
#: Messages this short (characters) get their own line of out-of-fold scores: real solicitations are often one line.
SHORT = 40
#: The review band's lower edge: where out-of-fold recall reaches this.
REVIEW_RECALL = 0.99
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


def preflight(rows, Y, groups, out, force, folds):
    """Fail in seconds, with the reason, what would otherwise fail after minutes of training."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    n_groups = len(set(groups.tolist()))
    if n_groups < folds:
        raise DataError(f"{n_groups} writer groups in the data, fewer than the {folds} folds of cross-validation")
    for k, label in enumerate(LABELS):
        positives = int(Y[:, k].sum())
        need = 2 * folds
        if positives < need or positives > len(rows) - need:
            raise DataError(f"{label}: {positives} positives in {len(rows)} rows; need at least {need} of each class "
                            f"for {folds}-fold cross-validation")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise DataError(f"cannot write the model beside {out}: {e.strerror}") from None
    free = shutil.disk_usage(parent).free
    if free < 200 * 2**20:
        raise DataError(f"{parent} has {free // 2**20} MB free; training needs about 200 MB")


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


def mean_average_precision(estimator, X, Y):
    """Scorer: average precision of each label's probability, averaged over the labels."""
    from sklearn.metrics import average_precision_score

    P = estimator.predict_proba(X)
    Y = np.asarray(Y).reshape(len(Y), -1)
    P = P.reshape(len(P), -1)[:, -Y.shape[1]:]
    return float(np.mean([average_precision_score(Y[:, k], P[:, k]) for k in range(Y.shape[1]) if Y[:, k].any()]))


def one_standard_error(cv_results):
    """``refit`` for GridSearchCV: the simplest candidate within one standard error of the best.

    The candidates are in :data:`GRID` order, simplest first (smaller C,
    fewer character n-grams, balanced weights), so the simplest eligible one
    is the first. Scores are nearly flat across the grid, and a looser fit
    mostly learns the writers' style, which flags everyday chat.
    """
    mean = np.asarray(cv_results["mean_test_score"])
    n_splits = sum(1 for key in cv_results if key.startswith("split") and key.endswith("_test_score"))
    se = np.asarray(cv_results["std_test_score"]) / np.sqrt(max(n_splits, 1))
    best = int(np.nanargmax(mean))
    return int(np.flatnonzero(mean >= mean[best] - se[best])[0])


def _candidates(grid):
    """GridSearchCV's candidates run in ParameterGrid order (keys sorted): reorder so the simplest come first."""
    from itertools import product

    keys = list(grid)
    return [{k: [v] for k, v in zip(keys, values)} for values in product(*(grid[k] for k in keys))]


def choose_threshold(y, p, real=None, *, precision=TARGET_PRECISION, real_rate=REAL_CHAT_RATE):
    """A label's threshold from out-of-fold probabilities.

    The lowest threshold (highest recall) at which precision is at least
    ``precision`` and, when ``real`` (probabilities of real everyday chat)
    is given, at most ``real_rate`` of it is flagged. Where no threshold
    reaches the precision, the best F1 that respects the real-chat rate.

    Returns
    -------
    (float, str or None)
        The threshold and a note when the precision target was not reached.
    """
    from sklearn.metrics import precision_recall_curve

    prec, rec, thresholds = precision_recall_curve(y, p)
    floor = 0.0
    if real is not None and len(real):
        # The smallest threshold that flags at most real_rate of the real chat.
        allowed = int(np.floor(real_rate * len(real)))
        floor = float(np.sort(real)[::-1][allowed]) if allowed < len(real) else 0.0
        floor = np.nextafter(floor, 1.0)
    ok = (thresholds >= floor) & (prec[:-1] >= precision) & (rec[:-1] > 0)
    if ok.any():
        i = np.flatnonzero(ok)[np.argmax(rec[:-1][ok])]
        return float(thresholds[i]), None
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    f1 = np.where(thresholds >= floor, f1[:-1], -1)
    i = int(np.argmax(f1))
    return float(thresholds[i]), f"precision {precision} not reachable; threshold at best F1 (precision {prec[i]:.3f})"


def review_edge(y, p, threshold):
    """The highest probability at which out-of-fold recall still reaches REVIEW_RECALL (at most the threshold)."""
    from sklearn.metrics import precision_recall_curve

    _, rec, thresholds = precision_recall_curve(y, p)
    ok = thresholds[rec[:-1] >= REVIEW_RECALL]
    edge = float(ok.max()) if len(ok) else float(thresholds[0])
    return min(edge, threshold)


def metrics_at(y, p, threshold):
    """Precision, recall, F1, average precision and confusion counts at a threshold."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

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


def train(data, out, *, seed=0, feedback=None, force=False, grid=None, progress=True, folds=FOLDS, n_jobs=None):
    """Train a model on labelled files and write it to ``out``.

    Parameters
    ----------
    data : list of path
        Labelled JSONL/CSV files or directories; a corpus directory
        (``data/``) contributes its training part, and its test, held-out
        and evaluation parts are measured after training.
    out : path
        The model directory; written beside it and swapped into place.
    seed : int
    feedback : path, optional
        Moderator decisions that override corpus labels (:mod:`classifier.feedback`).
    force : bool
        Replace an existing ``out``.
    grid : dict, optional
        Hyper-parameter grid (``Pipeline.set_params`` names); default :data:`GRID`.
    n_jobs : int, optional
        Parallel fits (default: the machine's cores, at most 2).

    Returns
    -------
    dict
        The manifest written.
    """
    from threadpoolctl import threadpool_limits

    out = Path(out)
    recover_dir(out)
    started = time.time()
    rows, report = load_labelled(data, part="train")
    feedback_report = None
    if feedback:
        from .feedback import apply_feedback

        rows, feedback_report = apply_feedback(rows, feedback, holdout=[d for d in data if is_corpus(d)])
    Y = np.array([[r[k] for k in LABELS] for r in rows])
    groups = _writer_groups(rows)
    preflight(rows, Y, groups, out, force, folds)
    n_jobs = n_jobs or min(2, os.cpu_count() or 1)
    texts = [r["text"] for r in rows]
    _progress(f"read {len(rows)} rows ({report['duplicates']} duplicates dropped)", progress)

    variants = augment(texts, seed=seed)
    aug_texts = texts + [t for _, _, t in variants]
    source = np.array([i for i, _, _ in variants], dtype=int)
    aug_Y = np.vstack([Y, Y[source]]) if variants else Y
    aug_groups = np.concatenate([groups, groups[source]]) if variants else groups
    original = np.arange(len(aug_texts)) < len(texts)
    real = np.array([str(r.get("source", "")).startswith("real:") for r in rows])
    weight = np.where(np.concatenate([real, real[source]]) if variants else real, REAL_WEIGHT, 1.0)
    _progress(f"augmented with {len(variants)} disguised variants", progress)

    # One BLAS thread: sums in one order, the same on every machine.
    with threadpool_limits(1):
        docs = TextReader().transform(aug_texts)
        splits = _folds(aug_Y, aug_groups, folds, seed)
        params, search = _search(docs, aug_Y, weight, splits, original, grid or GRID, seed, n_jobs, progress)
        _progress(f"chose {params}", progress)
        pipeline = build_pipeline(params, random_state=seed)
        oof = _out_of_fold(pipeline, docs, aug_Y, weight, splits, n_jobs)[original]
        thresholds, review_lower, cv_metrics, notes = {}, {}, {}, []
        for k, label in enumerate(LABELS):
            t, note = choose_threshold(Y[:, k], oof[:, k], oof[real, k] if real.any() else None)
            thresholds[label] = t
            review_lower[label] = review_edge(Y[:, k], oof[:, k], t)
            cv_metrics[label] = metrics_at(Y[:, k], oof[:, k], t)
            if note:
                notes.append(f"{label}: {note}")
        short = np.array([len(t) <= SHORT for t in texts]) & ~real
        cv_short = {"max_chars": SHORT, "rows": int(short.sum()),
                    "metrics": {label: metrics_at(Y[short, k], oof[short, k], thresholds[label])
                                for k, label in enumerate(LABELS)} if short.any() else None}
        cv_real = {"rows": int(real.sum()),
                   "flagged": int((oof[real] >= np.array([thresholds[k] for k in LABELS])).any(axis=1).sum())}

        _progress("fitting the final model", progress)
        pipeline[1:].fit(docs, aug_Y, clf__sample_weight=weight)  # the reader is stateless: the whole pipeline is fitted

    manifest = {
        "labels": list(LABELS),
        "thresholds": thresholds,
        "review_lower": review_lower,
        "operating_point": {"target_precision": TARGET_PRECISION, "real_chat_rate": REAL_CHAT_RATE,
                            "review_recall": REVIEW_RECALL, "real_chat_weight": REAL_WEIGHT},
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "search": search,
        "cv": {"folds": folds, "metrics": cv_metrics, "short": cv_short, "real_chat": cv_real, "notes": notes,
               "out_of_fold": {"texts_sha256": _texts_hash(texts), "probabilities": np.round(oof, 8).tolist(),
                               "labels": Y.tolist(), "real": real.astype(int).tolist()}},
        "data": {
            "files": {str(p): sha256(p) for p in expand_paths(data)},
            "rows": len(rows),
            "duplicates_dropped": report["duplicates"],
            "label_counts": {label: int(Y[:, k].sum()) for k, label in enumerate(LABELS)},
            "sources": _count(r.get("source", "unspecified").split(":")[0] for r in rows),
        },
        "augmentation": {"seed": seed, "variants": len(variants),
                         "by_transform": _count(name for _, names, _ in variants for name in names)},
        "feedback": feedback_report,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "training_seconds": round(time.time() - started, 1),
    }
    manifest.update(_held_out(pipeline, data, thresholds, review_lower))
    files = [p for d in map(Path, data) if is_corpus(d) for p in sorted((d / "conversations").glob("*.jsonl"))]
    if files:
        from .conversation import fit_rule, read_conversations
        from .feedback import read_request_decisions
        from .model import Model

        conversations = read_conversations(files) + (read_request_decisions(os.fspath(feedback)) if feedback else [])
        _progress(f"fitting the conversation rule on {len(conversations)} conversations", progress)
        manifest["conversation_rule"] = fit_rule(Model(pipeline, manifest), conversations)
    manifest["canaries"] = [
        {"text": text, **{label: float(p) for label, p in zip(LABELS, probs)}}
        for text, probs in zip(CANARIES, pipeline.predict_proba(CANARIES))
    ]
    return _write(pipeline, manifest, out)


def _texts_hash(texts):
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _folds(Y, groups, folds, seed):
    from sklearn.model_selection import StratifiedGroupKFold

    strat = Y[:, 0] * 2 + Y[:, 1]
    with warnings.catch_warnings():
        # Small moderator files have rare label combinations; the folds are still valid.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(Y, strat, groups))


def _search(docs, Y, weight, splits, original, grid, seed, n_jobs, progress):
    """GridSearchCV over the features and an uncalibrated classifier (calibration is monotone:
    it changes no average precision); folds score original messages only."""
    from joblib import Memory
    from sklearn.model_selection import GridSearchCV

    scored = [(tr, te[original[te]]) for tr, te in splits]
    with tempfile.TemporaryDirectory(prefix="classifier-search-") as cache:
        # The features step is fitted once per fold and n-gram range, not once per C.
        pipeline = build_pipeline(random_state=seed)[1:]
        pipeline.set_params(clf__calibrate=False, memory=Memory(cache, verbose=0))
        search = GridSearchCV(pipeline, _candidates(grid), scoring=mean_average_precision, cv=scored,
                              refit=one_standard_error, n_jobs=n_jobs, error_score="raise")
        _progress(f"searching {len(search.param_grid)} candidates × {len(splits)} folds", progress)
        search.fit(docs, Y, clf__sample_weight=weight)
    r = search.cv_results_
    table = []
    for i, params in enumerate(r["params"]):
        table.append({**{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
                      "mean_average_precision": round(float(r["mean_test_score"][i]), 4),
                      "fold_se": round(float(r["std_test_score"][i] / np.sqrt(len(splits))), 4),
                      **({"chosen": True} if i == search.best_index_ else {})})
    return {**DEFAULT_PARAMS, **search.best_params_}, table


def _out_of_fold(pipeline, docs, Y, weight, splits, n_jobs):
    """The shipped pipeline's own out-of-fold probabilities, on the search's folds."""
    from sklearn.model_selection import cross_val_predict

    return cross_val_predict(pipeline[1:], docs, Y, cv=splits, method="predict_proba", n_jobs=n_jobs,
                             params={"clf__sample_weight": weight})


def _count(items):
    return dict(sorted(Counter(items).items()))


def _held_out(pipeline, data, thresholds, review_lower):
    """Scores on each corpus directory's test part, its evaluation sets and the flag rate on its held-out real chat."""
    out = {}
    cut = np.array([thresholds[k] for k in LABELS])
    edge = np.array([review_lower[k] for k in LABELS])
    for d in map(Path, data):
        if not is_corpus(d):
            continue
        test, _ = load_labelled([d], part="test")
        if test:
            probs = pipeline.predict_proba([r["text"] for r in test])
            out["test"] = {"rows": len(test), "metrics": {label: metrics_at([r[label] for r in test], probs[:, k], thresholds[label])
                                                          for k, label in enumerate(LABELS)}}
        evals = {}
        for path in sorted((d / "eval").glob("*.jsonl")):
            rows, _ = load_labelled([path])
            probs = pipeline.predict_proba([r["text"] for r in rows])
            evals[path.name] = {"rows": len(rows), "metrics": {label: metrics_at([r[label] for r in rows], probs[:, k], thresholds[label])
                                                               for k, label in enumerate(LABELS)}}
        if evals:
            out["eval"] = evals
        heldout, _ = load_labelled([d], part="heldout")
        rates = {}
        for name in sorted({r["_where"].rsplit(":", 1)[0] for r in heldout}):
            rows = [r for r in heldout if r["_where"].rsplit(":", 1)[0] == name]
            probs = pipeline.predict_proba([r["text"] for r in rows])
            flagged = (probs >= cut).any(axis=1)
            band = ~flagged & (probs >= edge).any(axis=1)
            rates[Path(name).name] = {"rows": len(rows), "flagged": int(flagged.sum()), "rate": round(float(flagged.mean()), 4),
                                      "review_band": int(band.sum())}
        if rates:
            out["real_chat"] = rates
    return out


def _write(pipeline, manifest, out):
    """Write the model beside ``out`` and swap it into place in one step."""
    from .card import model_card

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model directory is shared
    try:
        manifest = save_model(pipeline, tmp, manifest)
        (tmp / "MODEL_CARD.md").write_text(model_card(manifest), encoding="utf-8")
        replace_dir(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ClassifierError(f"could not write the model to {out}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
