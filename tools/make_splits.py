"""Build data/train/, data/test.jsonl and data/heldout/ from the written slices and the real chat.

Run once when the corpus changes: python tools/make_splits.py
The split is by a hash of each message's normalised text, so it is stable
when lines are added and identical texts can never straddle the splits.
"""

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from classifier.normalize import normalize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TEST_SHARE = 15  # percent
# Real benign chat: this many lines of each file train, the rest are held out
# to measure the share of everyday messages flagged.
REAL_TRAIN = {"asdc_main_dialog.jsonl": 2000, "realpersonachat_random.jsonl": 2000, "realpersonachat_keyword.jsonl": 1100}


def bucket(text):
    return int(hashlib.sha256(normalize(text).text.encode("utf-8", "surrogatepass")).hexdigest(), 16) % 100


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(written_dir, external_dir):
    test = []
    for path in sorted(Path(written_dir).glob("*.jsonl")):
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        write(DATA / "train" / f"written_{path.stem}.jsonl", [r for r in rows if bucket(r["text"]) >= TEST_SHARE])
        test += [r for r in rows if bucket(r["text"]) < TEST_SHARE]
    write(DATA / "test.jsonl", test)
    for path in sorted(Path(external_dir).rglob("*.jsonl")):
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        random.Random(0).shuffle(rows)
        rows = [{"id": f"real-{r['ref']}", "text": r["text"], "off_platform": 0, "peer_pressure": 0,
                 "source": f"real:{r['source']}", "ref": r["ref"]} for r in rows]
        n = REAL_TRAIN[path.name]
        write(DATA / "train" / f"real_{path.stem}.jsonl", rows[:n])
        write(DATA / "heldout" / f"real_{path.stem}.jsonl", rows[n:])
        licence = path.parent / "LICENSE"
        if licence.exists():
            shutil.copy(licence, DATA / "licenses" / f"{path.parent.name}.LICENSE") if (DATA / "licenses").mkdir(exist_ok=True) or True else None


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DATA / "written", sys.argv[2] if len(sys.argv) > 2 else ROOT.parent / "shared" / "external")
