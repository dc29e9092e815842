"""Labelled data: read and validate it; the corpus layout and its splits.

A corpus directory (``data/``) holds

- ``written/*.jsonl``: messages written for the project; a hash of each
  message's normalised text puts 15 % of them in the test part;
- ``real/*.jsonl``: real benign chat; the same hash puts half of it in the
  held-out part (the share of everyday messages flagged);
- ``eval/*.jsonl``: independent evaluation sets, never trained on.

The split is derived here, from the text, every time: it is stored nowhere
else, and identical or disguise-only variants of a message always land in
the same part.

    python -m classifier data check data/

validates every file, reports exact and near duplicates, label balance and
lengths, and exits non-zero on errors.
"""

import argparse
import csv
import hashlib
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

from .errors import DataError
from .labels import LABELS
from .normalize import normalize

__all__ = ["DataError", "read_labelled", "expand_paths", "load_labelled", "check_corpus", "jsonl_objects", "is_corpus", "part_of", "PARTS",
           "TEST_SHARE", "HELDOUT_SHARE"]

csv.field_size_limit(sys.maxsize)

#: Percent of the written messages in the test part.
TEST_SHARE = 15
#: Percent of the real chat held out to measure false alarms.
HELDOUT_SHARE = 50
#: The parts of a corpus: ``evaluation`` is the test part and the evaluation
#: sets (labelled messages never trained on); ``holdout`` adds the held-out real chat.
PARTS = ("train", "test", "heldout", "eval", "evaluation", "holdout")


def is_corpus(path):
    """A directory in the corpus layout (it has ``written/``)."""
    return Path(path).is_dir() and (Path(path) / "written").is_dir()


def _bucket(norm_text):
    return int(hashlib.sha256(norm_text.encode("utf-8", "surrogatepass")).hexdigest(), 16) % 100


def part_of(kind, norm_text):
    """The part a corpus row of folder ``kind`` (written, real or eval) belongs to."""
    if kind == "eval":
        return "eval"
    if kind == "real":
        return "heldout" if _bucket(norm_text) < HELDOUT_SHARE else "train"
    return "test" if _bucket(norm_text) < TEST_SHARE else "train"


def _corpus_rows(directory, part):
    """The rows of one part of a corpus directory.

    A text found in any held-out part (test, real chat held out, an
    evaluation set) never trains, even where its own file would put it in
    training: short stock phrases (よろしくお願いいたします) occur in several
    files.
    """
    directory = Path(directory)
    rows = []
    for kind in ("written", "real", "eval"):
        folder = directory / kind
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            for row in read_labelled(path):
                row["_norm"] = normalize(row["text"]).text
                row["_part"] = part_of(kind, row["_norm"])
                rows.append(row)
    held = {r["_norm"] for r in rows if r["_part"] != "train"}
    for r in rows:
        if r["_part"] == "train" and r["_norm"] in held:
            r["_part"] = "shared"
    if part == "holdout":
        return [r for r in rows if r["_part"] not in ("train", "shared")]
    if part == "evaluation":
        return [r for r in rows if r["_part"] in ("test", "eval")]
    return [r for r in rows if r["_part"] == part]


def _label(value, where, label, from_csv):
    if from_csv and value in ("0", "1"):
        return int(value)
    # bool is an int in Python; true/false are not labels here.
    if not from_csv and type(value) is int and value in (0, 1):
        return value
    if value is None:
        raise DataError(f"{where}: missing label {label!r} (expected 0 or 1)")
    raise DataError(f"{where}: label {label!r} is {value!r}, expected 0 or 1")


def _record(obj, where, from_csv):
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        kind = "missing" if text is None else f"a {type(text).__name__}"
        raise DataError(f"{where}: 'text' is {kind}, expected a string")
    if not text.strip():
        raise DataError(f"{where}: 'text' is empty")
    row = {k: v for k, v in obj.items() if k not in LABELS}
    for label in LABELS:
        row[label] = _label(obj.get(label), where, label, from_csv)
    row["_where"] = where
    return row


def jsonl_objects(path, encoding="utf-8"):
    """``(where, object)`` for each non-blank line of a JSONL file; a line that is not JSON is a DataError naming it."""
    with open(path, encoding=encoding) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                yield where, json.loads(line)
            except (ValueError, RecursionError) as e:
                raise DataError(f"{where}: not JSON ({e})") from None


def read_labelled(path):
    """Rows of a labelled JSONL or CSV file, validated.

    Raises
    ------
    DataError
        On the first bad line, naming the file, the line and the reason.
    """
    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(f)
                if not reader.fieldnames or "text" not in reader.fieldnames:
                    raise DataError(f"{path}:1: CSV header {reader.fieldnames} lacks a 'text' column")
                for obj in reader:
                    rows.append(_record(obj, f"{path}:{reader.line_num}", from_csv=True))
            else:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        raise DataError(f"{path}:{n}: not JSON ({e})") from None
                    rows.append(_record(obj, f"{path}:{n}", from_csv=False))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def expand_paths(paths):
    """Files behind ``--data`` arguments: a corpus directory means all its
    labelled files, another directory the JSONL and CSV files directly in it."""
    files = []
    for p in map(Path, paths):
        if is_corpus(p):
            files += sorted(q for kind in ("written", "real", "eval") for q in (p / kind).glob("*.jsonl"))
        elif p.is_dir():
            folder = p
            found = sorted(q for q in folder.iterdir() if q.suffix in (".jsonl", ".csv"))
            if not found:
                raise DataError(f"{folder}: no .jsonl or .csv files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    return files


def load_labelled(paths, part="train"):
    """Read and merge labelled files; drop duplicates, refuse conflicting ones.

    A corpus directory contributes its ``part`` (see :data:`PARTS`); a file
    or another directory, all its rows.

    Returns
    -------
    rows : list of dict
        One per distinct normalised text, each with ``_norm``.
    report : dict
        ``duplicates``: how many rows were dropped as repeats.

    Raises
    ------
    DataError
        For a bad line, or the same normalised text with different labels.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    seen = {}
    rows, dropped = [], 0
    sources = []
    for p in map(Path, paths):
        sources += [_corpus_rows(p, part)] if is_corpus(p) else [read_labelled(f) for f in expand_paths([p])]
    for row in (row for source in sources for row in source):
        key = row.get("_norm") or normalize(row["text"]).text
        row["_norm"] = key
        first = seen.get(key)
        if first is None:
            seen[key] = row
            rows.append(row)
            continue
        if any(first[k] != row[k] for k in LABELS):
            raise DataError(
                f"{row['_where']}: same text as {first['_where']} with other labels "
                f"({_labels(row)} vs {_labels(first)})"
            )
        dropped += 1
    return rows, {"duplicates": dropped}


def _labels(row):
    return ", ".join(f"{k}={row[k]}" for k in LABELS)


def check_corpus(directory):
    """Validate a corpus directory; return (report text, list of errors)."""
    directory = Path(directory)
    # samples/ is a log and conversations/ are requests, not labelled messages.
    files = sorted(p for kind in ("written", "real", "eval") for p in (directory / kind).glob("*.jsonl"))
    errors, lines = [], []
    by_norm = defaultdict(list)
    for path in files:
        try:
            rows = read_labelled(path)
        except DataError as e:
            errors.append(str(e))
            continue
        kind = path.parent.name
        combos = Counter((r["off_platform"], r["peer_pressure"]) for r in rows)
        lengths = [len(r["text"]) for r in rows]
        lines.append(
            f"{path.relative_to(directory)}: {len(rows)} rows; "
            + ", ".join(f"op={a} pp={b}: {combos[(a, b)]}" for a, b in sorted(combos))
            + f"; length median {statistics.median(lengths):.0f}, min {min(lengths)}, max {max(lengths)}"
        )
        for r in rows:
            norm = normalize(r["text"]).text
            by_norm[norm].append((part_of(kind, norm), r))
    exact = near = shared = 0
    for norm, group in by_norm.items():
        if len(group) < 2:
            continue
        texts = {r["text"] for _, r in group}
        exact += len(group) - len(texts)
        near += len(texts) - 1
        splits = {s for s, _ in group}
        where = ", ".join(r["_where"] for _, r in group[:3])
        if "train" in splits and splits - {"train"}:
            shared += 1  # load_labelled keeps these out of training
        if len({(r["off_platform"], r["peer_pressure"]) for _, r in group}) > 1:
            errors.append(f"conflicting labels for one normalised text: {where}")
    lines.append(f"duplicates: {exact} exact, {near} near (same text after normalisation); "
                 f"{shared} texts both in a training file and a held-out part, kept out of training")
    lines += [f"ERROR {e}" for e in errors]
    return "\n".join(lines), errors


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m classifier data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a corpus directory")
    check.add_argument("directory")
    args = parser.parse_args(argv)
    if not Path(args.directory).is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return 2
    report, errors = check_corpus(args.directory)
    print(report)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
