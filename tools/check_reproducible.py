"""Retrain the default model from data/ and check it predicts exactly as the shipped one.

    python tools/check_reproducible.py [--seed 0]

Exit status 0 when the retrained model's probabilities on data/test.jsonl and
the sample log equal the shipped model's; 1 otherwise, with the largest gap.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import classifier  # noqa: E402
from classifier.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    texts = [json.loads(line)["text"] for name in ("data/test.jsonl", "data/samples/messages.jsonl")
             for line in (ROOT / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    shipped = classifier.load(ROOT / "models" / "default")
    with tempfile.TemporaryDirectory() as tmp:
        train([ROOT / "data"], Path(tmp) / "model", seed=args.seed, progress=False)
        retrained = classifier.load(Path(tmp) / "model")
        a, b = shipped.predict_proba(texts), retrained.predict_proba(texts)
    gap = float(np.abs(a - b).max())
    same_thresholds = shipped.thresholds == retrained.thresholds
    print(f"{len(texts)} messages; largest probability gap {gap:.3g}; thresholds {'equal' if same_thresholds else 'differ'}")
    return 0 if gap < 1e-9 and same_thresholds else 1


if __name__ == "__main__":
    sys.exit(main())
