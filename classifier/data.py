"""Labelled data: read and validate it, and check a corpus directory.

    python -m classifier.data check data/

validates every file, reports exact and near duplicates (the same text after
normalisation), leaks between the training and test splits, label balance
and lengths, and exits non-zero on errors.
"""

import argparse
import csv
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

from .model import LABELS
from .normalize import normalize

__all__ = ["DataError", "read_labelled", "expand_paths", "load_labelled", "check_corpus"]

csv.field_size_limit(sys.maxsize)


class DataError(ValueError):
    """Labelled data that cannot be used: names the file, the line and the reason."""


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
    """Files for ``--data`` arguments: a directory means its ``train/`` folder
    when it has one, else the JSONL and CSV files directly in it."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            folder = p / "train" if (p / "train").is_dir() else p
            found = sorted(q for q in folder.iterdir() if q.suffix in (".jsonl", ".csv"))
            if not found:
                raise DataError(f"{folder}: no .jsonl or .csv files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    return files


def load_labelled(paths):
    """Read and merge labelled files; drop duplicates, refuse conflicting ones.

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
    seen = {}
    rows, dropped = [], 0
    for path in expand_paths(paths):
        for row in read_labelled(path):
            key = normalize(row["text"]).text
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
    # samples/ is a log, not labels; written/ holds the slices train/ and test.jsonl are split from.
    files = sorted(p for p in directory.rglob("*.jsonl") if not {"samples", "written"} & set(p.relative_to(directory).parts))
    errors, lines = [], []
    by_norm = defaultdict(list)
    for path in files:
        try:
            rows = read_labelled(path)
        except DataError as e:
            errors.append(str(e))
            continue
        split = "test" if path.name.startswith("test") else "heldout" if "heldout" in path.parts else "train"
        combos = Counter((r["off_platform"], r["peer_pressure"]) for r in rows)
        lengths = [len(r["text"]) for r in rows]
        lines.append(
            f"{path.relative_to(directory)}: {len(rows)} rows ({split}); "
            + ", ".join(f"op={a} pp={b}: {combos[(a, b)]}" for a, b in sorted(combos))
            + f"; length median {statistics.median(lengths):.0f}, min {min(lengths)}, max {max(lengths)}"
        )
        for r in rows:
            by_norm[normalize(r["text"]).text].append((split, r))
    exact = near = 0
    for norm, group in by_norm.items():
        if len(group) < 2:
            continue
        texts = {r["text"] for _, r in group}
        exact += len(group) - len(texts)
        near += len(texts) - 1
        splits = {s for s, _ in group}
        where = ", ".join(r["_where"] for _, r in group[:3])
        if "test" in splits and splits - {"test"}:
            errors.append(f"leak between splits: {where}")
        if len({(r["off_platform"], r["peer_pressure"]) for _, r in group}) > 1:
            errors.append(f"conflicting labels for one normalised text: {where}")
    lines.append(f"duplicates: {exact} exact, {near} near (same text after normalisation)")
    lines += [f"ERROR {e}" for e in errors]
    return "\n".join(lines), errors


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m classifier.data", description=__doc__.splitlines()[0])
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
