"""MODEL_CARD.md: the manifest, for a person."""

from .labels import LABELS

__all__ = ["model_card"]


def _metrics_table(metrics):
    lines = ["| label | precision | recall | F1 | average precision | TP | FP | FN | TN |", "|---|---|---|---|---|---|---|---|---|"]
    for label in LABELS:
        m = metrics[label]
        lines.append(
            f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
            f"{m['average_precision'] if m['average_precision'] is not None else '-'} | {m['tp']} | {m['fp']} | {m['fn']} | {m['tn']} |"
        )
    return "\n".join(lines)


#: Label changes listed in the card; manifest.json has them all.
FEEDBACK_ROWS = 20


def _feedback_section(f):
    """What moderator decisions (classifier/feedback.py) changed in the training data."""
    skipped = f.get("skipped", 0)
    parts = ["", "## Moderator feedback", "", f"From `{f['file']}`: {f['decisions']} decisions; "
             f"{f['changed']} corpus labels changed, {f['added']} messages added, {f['conflicts']} texts with conflicting decisions (latest kept)"
             + (f", {skipped} skipped because the message is held out for evaluation" if skipped else "") + "."]
    changed = f.get("details", {}).get("changed", [])
    if changed:
        parts += ["", "| message | before | after | decided by | decided at |", "|---|---|---|---|---|"]
        for c in changed[:FEEDBACK_ROWS]:
            text = " ".join(c["text"].split()).replace("|", "\\|")
            text = text if len(text) <= 60 else text[:59] + "…"
            before, after = (", ".join(f"{k}={c[side][k]}" for k in LABELS) for side in ("before", "after"))
            parts.append(f"| {text} | {before} | {after} | {c['decision'].get('decided_by') or '-'} | {c['decision'].get('decided_at') or '-'} |")
        if len(changed) > FEEDBACK_ROWS:
            parts.append(f"\n… and {len(changed) - FEEDBACK_ROWS} more under `feedback` in manifest.json.")
    return parts


def _param(p, key):
    value = p[key]
    return f"{value[0]}–{value[1]}" if isinstance(value, list) else value


def model_card(manifest):
    """Render a model card in Markdown from a training manifest."""
    m = manifest
    p = m["params"]
    op = m["operating_point"]
    parts = [
        "# Model card",
        "",
        f"Created {m['created']} with seed {m['seed']} from {m['data']['rows']} distinct messages "
        f"({m['data']['duplicates_dropped']} duplicates dropped). Labels: {', '.join(LABELS)} "
        "(definitions in `data/LABELING.md`).",
        "",
        "## Pipeline",
        "",
        "One scikit-learn `Pipeline`, which is what scores: `read` (normalisation: NFKC, invisible characters removed, "
        "disguised contact tools and handles mapped to one form, see `classifier/normalize.py`; then MeCab with "
        "unidic-lite, once) → `features` (TF-IDF over UniDic lemma n-grams "
        f"1–{p['features__word_ngram_max']} and over character n-grams {_param(p, 'features__char_ngram_range')} of the "
        "normalised text) → `clf` (per label, "
        f"`CalibratedClassifierCV(LogisticRegression(C={p['clf__C']}, class_weight={p['clf__class_weight']}), "
        "method='sigmoid', ensemble=False)`).",
        "",
        "## Why these hyper-parameters",
        "",
        f"`GridSearchCV` on {m['cv']['folds']} stratified group folds. The groups are the writers: each written "
        "slice (one writer's brief) sits wholly in one fold, so every fold is scored on writers the model did not learn from; "
        "a message's disguised variants stay with it, and only original messages are scored. The score is average precision "
        "averaged over both labels (the search fits uncalibrated regressions: a monotone calibration changes no average "
        "precision). `refit` is the one-standard-error rule: the simplest candidate (smallest C, then fewest character "
        "n-grams, then balanced weights) within one standard error of the best.",
        "",
        "| C | char n-grams | class_weight | mean AP ± SE |",
        "|---|---|---|---|",
    ]
    for s in m["search"]:
        mark = " **(chosen)**" if s.get("chosen") else ""
        parts.append(f"| {s['clf__C']} | {_param(s, 'features__char_ngram_range')} | {s['clf__class_weight']} | "
                     f"{s['mean_average_precision']} ± {s['fold_se']}{mark} |")
    cv_real = m["cv"]["real_chat"]
    parts += [
        "",
        "## Operating point",
        "",
        "Chosen on the shipped pipeline's own out-of-fold probabilities (`cross_val_predict` of the chosen, calibrated "
        "pipeline on the same writer-grouped folds), so a threshold means on the shipped scorer what this card says. "
        f"Each label is flagged from the lowest probability at which out-of-fold precision is at least {op['target_precision']} "
        f"**and** at most {op['real_chat_rate']:.1%} of the real everyday chat trained on is flagged (out of fold): the "
        "written corpus is mostly hard negatives, a real message stream mostly easy ones, and both must hold. "
        f"The review band starts where out-of-fold recall reaches {op['review_recall']}. In training, each line of real "
        f"everyday chat weighs {op.get('real_chat_weight', 1)} written messages (a real stream is mostly such chat).",
        "",
        "| label | threshold | review band from |",
        "|---|---|---|",
    ]
    for label in LABELS:
        parts.append(f"| {label} | {m['thresholds'][label]:.4f} | {m['review_lower'][label]:.4f} |")
    parts += [f"- {note}" for note in m["cv"]["notes"]]
    parts += ["", "## Cross-validated scores (out of fold, at the thresholds)", "", _metrics_table(m["cv"]["metrics"]),
              "", f"Real everyday chat in training, out of fold: {cv_real['flagged']} of {cv_real['rows']} flagged."]
    if (m["cv"].get("short") or {}).get("metrics"):
        short = m["cv"]["short"]
        parts += ["", f"Written messages of at most {short['max_chars']} characters ({short['rows']}), out of fold, "
                  "at the same thresholds:", "", _metrics_table(short["metrics"])]
    if "test" in m:
        parts += ["", f"## Test part of the written corpus ({m['test']['rows']} messages, never used for any choice)", "",
                  _metrics_table(m["test"]["metrics"])]
    for name, e in m.get("eval", {}).items():
        parts += ["", f"## Independent set `data/eval/{name}` ({e['rows']} messages by a writer who never saw the "
                  "training slices; never trained on)", "", _metrics_table(e["metrics"])]
    if "real_chat" in m:
        parts += ["", "## Real everyday chat never trained on (share flagged; all are benign)", ""]
        parts += [f"- `{name}`: {r['flagged']} of {r['rows']} flagged ({r['rate']:.2%}); {r.get('review_band', '-')} more in the review band"
                  for name, r in m["real_chat"].items()]
    if m.get("conversation_rule"):
        from .conversation import rule_card

        parts += ["", *rule_card(m["conversation_rule"])]
    a = m["augmentation"]
    parts += [
        "",
        "## Data",
        "",
        "Positives: " + ", ".join(f"{k} {v}" for k, v in m["data"]["label_counts"].items()) + ". Rows by source: "
        + ", ".join(f"{k} {v}" for k, v in m["data"]["sources"].items()) + ".",
        "",
        f"Augmentation (seed {a['seed']}): {a['variants']} disguised variants of training messages added, by transform: "
        + ", ".join(f"{k} {v}" for k, v in sorted(a["by_transform"].items())) + ". They never enter a test part.",
    ]
    if m.get("feedback"):
        parts += _feedback_section(m["feedback"])
    parts += [
        "",
        "## Limits",
        "",
        "- Trained on messages written for this project and real benign chat; it has not seen real scam logs.",
        "- It reads one message at a time; the conversation rule (README, Review) weighs a request's messages together.",
        "- Texts longer than 100,000 characters after normalisation are scored on their head and tail.",
        "",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
    ]
    return "\n".join(parts)
