"""Retrain the default model from data/ and check it predicts as the shipped one, within a stated tolerance.

    python tools/check_reproducible.py [--seed 0] [--tolerance 1e-4]

Another machine sums floating-point numbers in another order (CPU features,
library builds), so a retrain cannot match bit for bit; training fixes what
would make it drift further (one BLAS thread, solver tolerance 1e-7). The
check: every probability on the test part, the evaluation sets and the
sample log within ``--tolerance`` of the shipped model's; every threshold and
conversation band within it; and the same flags, except for a message whose
probability lies within the tolerance of its threshold.

Exit status 0 when all hold; 1 otherwise, naming the largest gap.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import classifier  # noqa: E402
from classifier.data import load_labelled  # noqa: E402
from classifier.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4


def compare(shipped, retrained, texts, tolerance):
    """Problems found (a list of strings) and the largest probability gap."""
    a, b = shipped.predict_proba(texts), retrained.predict_proba(texts)
    gap = float(np.abs(a - b).max())
    problems = [f"largest probability gap {gap:.3g} > {tolerance}"] if gap > tolerance else []
    for k, label in enumerate(classifier.LABELS):
        for name, x, y in (("threshold", shipped.thresholds[label], retrained.thresholds[label]),
                           ("review edge", shipped.review_lower[label], retrained.review_lower[label])):
            if abs(x - y) > tolerance:
                problems.append(f"{label} {name} {x:.6f} vs {y:.6f}")
        t = shipped.thresholds[label]
        differ = (a[:, k] >= t) != (b[:, k] >= retrained.thresholds[label])
        near = np.abs(a[:, k] - t) <= tolerance
        problems += [f"{label} flag differs on {texts[i]!r}" for i in np.flatnonzero(differ & ~near)]
    rule_a, rule_b = shipped.manifest.get("conversation_rule"), retrained.manifest.get("conversation_rule")
    if bool(rule_a) != bool(rule_b):
        problems.append("one model has a conversation rule, the other not")
    elif rule_a:
        for key in ("deny_at", "approve_below"):
            if abs(rule_a[key] - rule_b[key]) > tolerance:
                problems.append(f"conversation rule {key} {rule_a[key]:.6f} vs {rule_b[key]:.6f}")
    return problems, gap


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    rows, _ = load_labelled([ROOT / "data"], part="holdout")
    texts = [r["text"] for r in rows] + [json.loads(line)["text"] for line in
                                         (ROOT / "data/samples/messages.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    shipped = classifier.load(ROOT / "models" / "default")
    with tempfile.TemporaryDirectory() as tmp:
        train([ROOT / "data"], Path(tmp) / "model", seed=args.seed, progress=False)
        retrained = classifier.load(Path(tmp) / "model")
        problems, gap = compare(shipped, retrained, texts, args.tolerance)
    print(f"{len(texts)} messages; largest probability gap {gap:.3g} (tolerance {args.tolerance})")
    for p in problems[:20]:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
