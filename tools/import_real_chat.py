"""Import the real benign chat into data/real/, one labelled file per source.

    python tools/import_real_chat.py [EXTERNAL_DIR]

EXTERNAL_DIR (default ../shared/external) holds the outside authors' chat,
one JSONL per source with a LICENSE beside it. Every line becomes a
negative (0, 0) with its source and reference; the licences are copied to
data/licenses/. Which lines train and which are held out is not decided
here: classifier/data.py derives it from each text (HELDOUT_SHARE).
"""

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


def main(external_dir):
    (DATA / "real").mkdir(exist_ok=True)
    (DATA / "licenses").mkdir(exist_ok=True)
    for path in sorted(Path(external_dir).rglob("*.jsonl")):
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        with open(DATA / "real" / path.name, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"id": f"real-{r['ref']}", "text": r["text"], "off_platform": 0, "peer_pressure": 0,
                                    "source": f"real:{r['source']}", "ref": r["ref"]}, ensure_ascii=False) + "\n")
        licence = path.parent / "LICENSE"
        if licence.exists():
            shutil.copy(licence, DATA / "licenses" / f"{path.parent.name}.LICENSE")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "external")
