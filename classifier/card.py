"""MODEL_CARD.md: the manifest, for a person."""

from .model import LABELS

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


def model_card(manifest):
    """Render a model card in Markdown from a training manifest."""
    m = manifest
    p = m["params"]
    best = next((s for s in m["search"] if s.get("chosen")), None)
    parts = [
        "# Model card",
        "",
        f"Created {m['created']} with seed {m['seed']} from {m['data']['rows']} distinct messages "
        f"({m['data']['duplicates_dropped']} duplicates dropped). Labels: {', '.join(LABELS)} "
        "(definitions in `data/LABELING.md`).",
        "",
        "## Pipeline",
        "",
        "Normalisation (NFKC, invisible characters removed, disguised contact tools and handles mapped to one form, "
        "see `classifier/normalize.py`) → TF-IDF over UniDic lemma n-grams "
        f"(1–{p['word_ngram_max']}, fugashi + unidic-lite) and over character n-grams of the normalised text "
        f"({p['char_ngram_min']}–{p['char_ngram_max']}, which carry the surface forms) → one logistic regression per label "
        f"(C={p['C']}, class_weight={p['class_weight']}) with Platt scaling fitted on out-of-fold decision values.",
        "",
        "## Why these hyper-parameters",
        "",
        f"Chosen by {m['cv']['folds']}-fold stratified group cross-validation. The groups are the writers: each written "
        "slice (one writer's brief) sits wholly in one fold, so every fold is scored on writers the model did not learn from, "
        "as the independent evaluation sets are; a message's disguised variants stay with it, and only original messages "
        "are scored. The score is average precision (threshold-free), averaged over both labels; the chosen configuration is "
        "the simplest (smallest C, then fewest character n-grams) whose fold mean lies within one standard error of the "
        "best: the scores are nearly flat across the grid, and looser fits mostly learn the writers' style, which then "
        "flags everyday chat.",
        "",
        "| char n-grams | C | class_weight | AP off_platform | AP peer_pressure | fold mean ± SE |",
        "|---|---|---|---|---|---|",
    ]
    for s in m["search"]:
        mark = " **(chosen)**" if s is best else ""
        parts.append(
            f"| {s['char'][0]}–{s['char'][1]} | {s['C']} | {s['class_weight']} | {s['average_precision']['off_platform']} | "
            f"{s['average_precision']['peer_pressure']} | {s.get('fold_mean', '-')} ± {s.get('fold_se', '-')}{mark} |"
        )
    parts += [
        "",
        "## Thresholds",
        "",
        "Each label's threshold is the one with the highest cross-validated recall at precision ≥ 0.95. "
        "The review band's lower edge is the highest probability at which cross-validated recall still reaches 0.99.",
        "",
        "| label | threshold | review band from |",
        "|---|---|---|",
    ]
    for label in LABELS:
        parts.append(f"| {label} | {m['thresholds'][label]:.4f} | {m['review_lower'][label]:.4f} |")
    parts += [f"- {note}" for note in m["cv"]["notes"]]
    parts += ["", "## Cross-validated scores (at the thresholds)", "", _metrics_table(m["cv"]["metrics"])]
    if "test" in m:
        parts += ["", f"## Test split (`{m['test']['file']}`, never used for any choice)", "", _metrics_table(m["test"]["metrics"])]
    if "real_chat" in m:
        parts += ["", "## Real everyday chat never trained on (share flagged; all are benign)", ""]
        parts += [f"- `{name}`: {r['flagged']} of {r['rows']} flagged ({r['rate']:.2%}); {r.get('review_band', '-')} more in the review band"
                  for name, r in m["real_chat"].items()]
    a = m["augmentation"]
    parts += [
        "",
        "## Data",
        "",
        f"Positives: " + ", ".join(f"{k} {v}" for k, v in m["data"]["label_counts"].items()) + ". Rows by source: "
        + ", ".join(f"{k} {v}" for k, v in m["data"]["sources"].items()) + ".",
        "",
        f"Augmentation (seed {a['seed']}): {a['variants']} disguised variants of training messages added, by transform: "
        + ", ".join(f"{k} {v}" for k, v in sorted(a["by_transform"].items())) + ". They never enter the test split.",
    ]
    if m.get("feedback"):
        parts += _feedback_section(m["feedback"])
    parts += [
        "",
        "## Limits",
        "",
        "- Trained on messages written for this project and real benign chat; it has not seen real scam logs.",
        "- It reads one message at a time: pressure spread over several messages is seen only message by message.",
        "- Texts longer than 100,000 characters after normalisation are scored on their head and tail.",
        "",
        f"Libraries: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
    ]
    return "\n".join(parts)
