"""Batch scoring of message logs: streamed, in order, nothing lost.

Reading yields one :class:`Row` per input row, good or bad; scoring turns a
list of rows into output records (one each, in order); writing puts records
out as JSONL or CSV. The local command and the Dask path share
:func:`score_rows`.
"""

import csv
import gzip
import io
import json
import math
import os
import signal
import sys
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from .model import LABELS, load
from .normalize import MAX_CHARS

__all__ = ["Row", "read_rows", "read_stream", "score_rows", "Writer", "Summary", "run_batch", "open_output", "BatchError"]

#: Rows handed to a worker at once.
CHUNK = 256
#: Texts longer than this are scored but reported: normalisation keeps their head and tail only.
LONG_TEXT = MAX_CHARS

csv.field_size_limit(sys.maxsize)


class BatchError(Exception):
    """An invocation that cannot run: missing input, unwritable output."""


@dataclass
class Row:
    """One input row: where it came from, what it held, or what was wrong."""

    line: int
    record: dict = None
    error: str = None
    source: str = ""


def _open_binary(path):
    if path == "-":
        return sys.stdin.buffer
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _format_of(path, default="jsonl"):
    name = str(path).lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return default


def check_inputs(paths):
    """Refuse missing or unreadable inputs before any work starts."""
    for path in paths:
        if path != "-" and not os.path.isfile(path):
            raise BatchError(f"input {path}: no such file")
        if path != "-" and not os.access(path, os.R_OK):
            raise BatchError(f"input {path}: not readable")


def read_rows(paths, *, input_format=None, stats=None):
    """Rows of JSONL/CSV logs (``.gz`` too, ``-`` for standard input).

    Never raises for bad content: a line that is not JSON, not an object,
    not UTF-8, or a truncated gzip becomes a :class:`Row` with ``error``.
    Blank lines are not rows; they are counted in ``stats["blank"]``.
    """
    stats = stats if stats is not None else {}
    for path in paths or ["-"]:
        name = "<stdin>" if path == "-" else str(path)
        f = _open_binary(path)
        try:
            yield from read_stream(f, name, input_format=input_format, stats=stats)
        finally:
            if f is not sys.stdin.buffer:
                f.close()


def read_stream(f, name, *, input_format=None, stats=None):
    """Rows of one open binary stream, read as :func:`read_rows` reads a file.

    The local command and the Dask path (one file per partition) both read
    through here, so a bad row is the same :class:`Row` on either.

    Parameters
    ----------
    f : binary file object
        Already decompressed.
    name : str
        The file's name: it picks the format (``.csv`` or JSONL, ``.gz``
        ignored) unless ``input_format`` is given, and it appears in errors.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("blank", 0)
    fmt = input_format or _format_of(name)
    try:
        reader = _read_csv if fmt == "csv" else _read_jsonl
        yield from reader(f, name, stats)
    except (EOFError, OSError, zlib.error) as e:
        # A truncated or corrupt .gz: the rows before it are out already.
        yield Row(line=0, error=f"{name}: input ends early or is corrupt ({e}); rows after this point are lost", source=name)


def _read_jsonl(f, name, stats):
    # Split on b"\n" only: U+2028 or a lone \r inside a JSON string is not a row break.
    for n, raw in enumerate(f, 1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Row(n, error=f"line {n} is not valid UTF-8 (byte {e.start}: {e.reason})", source=name)
            continue
        if not line.strip():
            stats["blank"] += 1
            continue
        try:
            # strict=False: a raw control character (\r, a tab) inside a string
            # is common in exported logs and harmless; the text is still one row.
            obj = json.loads(line, strict=False)
        except ValueError as e:
            yield Row(n, error=f"line {n} is not JSON: {e}", source=name)
            continue
        if not isinstance(obj, dict):
            yield Row(n, error=f"line {n} is a JSON {type(obj).__name__}, expected an object", source=name)
            continue
        yield Row(n, record=obj, source=name)


def _read_csv(f, name, stats):
    text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(text)
    n = 0
    try:
        for record in reader:
            n += 1
            bad = [k for k, v in record.items() if isinstance(v, str) and _has_escaped_bytes(v)]
            if bad:
                yield Row(reader.line_num, error=f"row {n} (line {reader.line_num}) is not valid UTF-8 in {bad[0]!r}", source=name)
                continue
            if None in record:
                extra = record.pop(None)
                record["_extra_fields"] = extra
            yield Row(reader.line_num, record=record, source=name)
    except csv.Error as e:
        yield Row(reader.line_num, error=f"CSV error at line {reader.line_num}: {e}; rows after it are lost", source=name)
    finally:
        text.detach()


def _has_escaped_bytes(s):
    return any("\udc80" <= c <= "\udcff" for c in s)


def _text_error(record, text_field):
    if text_field not in record:
        return f"no {text_field!r} field"
    text = record[text_field]
    if text is None:
        return f"{text_field!r} is null"
    if isinstance(text, float) and math.isnan(text):
        return f"{text_field!r} is NaN"
    if not isinstance(text, str):
        return f"{text_field!r} is a {type(text).__name__}, expected a string"
    return None


def score_rows(model, rows, *, text_field="text", id_field="id"):
    """Score a list of rows; return one output record per row, in order.

    Good rows keep their fields and gain ``id``, a probability per label,
    ``flagged`` and ``evidence``; bad rows gain ``error`` (and scores where
    there is a text to score).
    """
    out, texts, where = [], [], []
    for row in rows:
        rec = dict(row.record) if row.record is not None else {}
        rec["id"] = rec.get(id_field) if rec.get(id_field) not in (None, "") else row.line
        error = row.error
        if row.record is not None:
            text = row.record.get(text_field)
            error = error or _text_error(row.record, text_field)
            if isinstance(text, str):
                if not text.strip():
                    error = f"{text_field!r} is empty"
                elif len(text) > LONG_TEXT:
                    error = f"{text_field!r} has {len(text)} characters; scored on its head and tail"
                texts.append(text)
                where.append(len(out))
        if error:
            rec["error"] = error
        out.append(rec)
    if texts:
        for i, result in zip(where, model.score(texts)):
            out[i].update(result)
    return out


class Summary:
    """Counts for the one-line report at the end of a run."""

    def __init__(self):
        self.read = self.scored = self.errors = 0
        self.flagged = {label: 0 for label in LABELS}
        self.started = time.monotonic()
        self.stats = {"blank": 0}

    def add(self, records):
        for rec in records:
            self.read += 1
            if "error" in rec:
                self.errors += 1
            else:
                self.scored += 1
            for label in rec.get("flagged", ()):
                self.flagged[label] += 1

    def as_dict(self):
        seconds = time.monotonic() - self.started
        return {
            "rows_read": self.read,
            "rows_scored": self.scored,
            "rows_with_errors": self.errors,
            "flagged": dict(self.flagged),
            "blank_lines_skipped": self.stats["blank"],
            "seconds": round(seconds, 2),
            "messages_per_second": round(self.read / seconds, 1) if seconds > 0 else None,
        }

    def line(self):
        d = self.as_dict()
        flagged = ", ".join(f"{k} {v}" for k, v in d["flagged"].items())
        return (f"rows read {d['rows_read']}, scored {d['rows_scored']}, with errors {d['rows_with_errors']}; "
                f"flagged: {flagged}; blank lines skipped {d['blank_lines_skipped']}; "
                f"{d['messages_per_second']} messages/s")


def open_output(path):
    """Open the output for writing now, so an unwritable path fails before any work."""
    if path in (None, "-"):
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise BatchError(f"output {path}: {e.strerror}") from None


def to_json_line(record):
    """One JSON line; U+2028/U+2029 escaped so no line-splitter breaks the row."""
    line = json.dumps(record, ensure_ascii=False, default=str)
    return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


class Writer:
    """Writes output records as JSONL or CSV, one whole line per write."""

    def __init__(self, stream, fmt="jsonl"):
        self.stream = stream
        self.fmt = fmt
        self.columns = None

    def write(self, records):
        if self.fmt == "jsonl":
            self.stream.write("".join(to_json_line(r) for r in records))
        else:
            self._write_csv(records)
        self.stream.flush()

    def _write_csv(self, records):
        if not records:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if self.columns is None:
            # Columns come from the first rows; fields first seen later go to _extra as JSON.
            keys = []
            for rec in records:
                keys += [k for k in rec if k not in keys]
            front = ["id", *LABELS, "flagged", "error"]
            self.columns = front + [k for k in keys if k not in front and k != "evidence"] + ["evidence", "_extra"]
            writer.writerow(self.columns)
        for rec in records:
            extra = {k: v for k, v in rec.items() if k not in self.columns}
            rec = {**rec, "_extra": json.dumps(extra, ensure_ascii=False, default=str) if extra else ""}
            writer.writerow([_cell(rec.get(c, "")) for c in self.columns])
        self.stream.write(buf.getvalue())


def _cell(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


# --- parallel scoring -------------------------------------------------------

_worker_model = None


def _init_worker(model_path):
    global _worker_model
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_model = load(model_path)


def _score_in_worker(rows, text_field, id_field):
    return score_rows(_worker_model, rows, text_field=text_field, id_field=id_field)


def _chunks(rows, size):
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _died(chunk, text_field, id_field):
    """Output for rows whose worker process died: reported, not lost."""
    out = []
    for row in chunk:
        rec = dict(row.record) if row.record is not None else {}
        rec["id"] = rec.get(id_field) if rec.get(id_field) not in (None, "") else row.line
        rec["error"] = "the worker process scoring this row died; it was not scored"
        out.append(rec)
    return out


class _Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise _Interrupted(signal.Signals(signum).name)


def run_batch(rows, writer, summary, *, model=None, model_path=None, jobs=1, text_field="text",
              id_field="id", only_flagged=False, progress=None, chunk_size=CHUNK):
    """Score rows and write them; return normally even when interrupted.

    Returns
    -------
    str or None
        The signal name if SIGINT or SIGTERM stopped the run.
    """
    def emit(records):
        summary.add(records)
        if only_flagged:
            records = [r for r in records if r.get("flagged") or "error" in r]
        writer.write(records)
        if progress is not None:
            progress.update(len(records))

    # Signal handlers can only be set from the main thread; a Dask worker
    # runs this in a thread of its own, where its nanny deals with signals.
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        if jobs <= 1:
            model = model or load(model_path)
            for chunk in _chunks(rows, chunk_size):
                emit(score_rows(model, chunk, text_field=text_field, id_field=id_field))
        else:
            _run_parallel(rows, emit, model_path, jobs, text_field, id_field, chunk_size)
    except (KeyboardInterrupt, _Interrupted) as e:
        return str(e) or "SIGINT"
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)
    return None


def _run_parallel(rows, emit, model_path, jobs, text_field, id_field, chunk_size):
    def new_pool():
        return ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(model_path,))

    pool = new_pool()
    pending = deque()
    try:
        chunks = _chunks(rows, chunk_size)
        while True:
            # A bounded window of chunks in flight: memory stays flat on any log.
            while len(pending) < 2 * jobs:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                pending.append((chunk, pool.submit(_score_in_worker, chunk, text_field, id_field)))
            if not pending:
                break
            chunk, future = pending.popleft()
            try:
                emit(future.result())
            except BrokenProcessPool:
                _discard(pool)
                pool = new_pool()
                retry = [chunk] + [c for c, _ in pending]
                pending.clear()
                # Retry each chunk alone: one that kills a worker again is reported, not retried.
                for c in retry:
                    try:
                        emit(pool.submit(_score_in_worker, c, text_field, id_field).result())
                    except BrokenProcessPool:
                        emit(_died(c, text_field, id_field))
                        _discard(pool)
                        pool = new_pool()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _discard(pool):
    """Shut down a broken pool without waiting on its survivors.

    A worker that dies abruptly can leave a queue lock taken, and the
    survivors then block on it forever, hanging the interpreter at exit
    (CPython gh-94777, fixed in 3.12): kill them first.
    """
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
