"""Batch scoring of message logs: streamed, in order, nothing lost.

Reading yields one :class:`Row` per input row, good or bad; scoring turns a
list of rows into output records (one each, in order); writing puts records
out as JSONL or CSV. The local command and the Dask path share
:func:`score_rows`.

Hostile input is an error row, never a crash: a lone surrogate (``"\\ud800"``)
is scored (normalisation drops it) and written escaped; JSON nested deeper
than :data:`MAX_DEPTH` levels, NaN texts, CSV records with an unclosed quote
are reported with their line numbers and reading goes on. Output files are
written whole or not at all (:func:`open_output`).
"""

import codecs
import contextlib
import csv
import ctypes
import gzip
import io
import json
import math
import os
import re
import signal
import sys
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from .fsutil import atomic_file, same_file
from .labels import LABELS
from .normalize import MAX_CHARS

__all__ = ["Row", "parsed", "read_rows", "read_stream", "score_rows", "Writer", "Summary", "run_batch", "open_output",
           "check_inputs", "check_output", "output_format", "exit_status", "to_json_line", "Stopped", "BatchError"]

#: Rows scored at once (and written at once).
CHUNK = 256
#: Rows handed to a ``--jobs`` worker at once: large enough that the round trip and the pipeline's per-call costs vanish.
WORKER_CHUNK = 1024
#: Texts longer than this are scored but reported: normalisation keeps their head and tail only.
LONG_TEXT = MAX_CHARS
#: JSON lines nested deeper than this are error rows (Python's parser would overflow its stack near 1,000).
MAX_DEPTH = 100
#: A CSV record spanning more physical lines than this is taken for an unclosed quote.
MAX_RECORD_LINES = 10_000
#: Bytes of a CSV input looked at to decide between UTF-8 and CP932 when no encoding is given.
SNIFF_BYTES = 1 << 20
#: Encoding tried for a CSV input that is not UTF-8 (Japanese Excel's "CSV").
FALLBACK_ENCODING = "cp932"
#: Cell starts a spreadsheet reads as a formula; CSV output prefixes them with ``'``.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

csv.field_size_limit(sys.maxsize)


from .errors import BatchError  # noqa: E402  (re-exported: callers import it from here)


class Stopped(Exception):
    """A signal stopped the run.

    The command raises it inside the output's ``with`` block, so that the
    output is kept as ``.partial`` and the previous one stays in place.
    """


@dataclass
class Row:
    """One input row: where it came from, what it held, or what was wrong."""

    line: int
    record: dict = None
    error: str = None
    source: str = ""
    #: A JSONL line read but not parsed yet (``read_rows(..., parse=False)``): see :func:`parsed`.
    json: str = None


def parsed(row):
    """``row`` with its JSON line parsed into ``record`` (or ``error``), as :func:`read_rows` parses it."""
    return row if row.json is None else _parse_jsonl(row.line, row.json, row.source)


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


def _codec(encoding):
    """The codec's canonical name (``"utf-8"``, ``"cp932"``), or None for the default."""
    if encoding is None:
        return None
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise BatchError(f"--encoding {encoding}: unknown encoding") from None


def check_inputs(paths, *, input_format=None, encoding=None):
    """Refuse missing or unreadable inputs, an unknown encoding, or a CSV header that cannot be used, before any work.

    Raises
    ------
    BatchError
        Naming the input and what is wrong with it.
    """
    codec = _codec(encoding)
    for path in paths:
        if path == "-":
            continue
        if not os.path.isfile(path):
            raise BatchError(f"input {path}: no such file")
        if not os.access(path, os.R_OK):
            raise BatchError(f"input {path}: not readable")
        fmt = input_format or _format_of(path)
        _check_jsonl_codec(path, fmt, codec)
        if fmt == "csv":
            # The header is checked now so that a duplicated column fails before any output is written.
            with _open_binary(path) as f, contextlib.closing(read_stream(f, str(path), input_format="csv",
                                                                         encoding=encoding)) as rows:
                next(rows, None)


def _check_jsonl_codec(name, fmt, codec):
    # JSONL is split on the byte \n, which UTF-16 and UTF-32 spread over several bytes.
    if fmt != "csv" and codec and "\n".encode(codec) != b"\n":
        raise BatchError(f"input {name}: --encoding {codec} cannot be read as JSONL (lines are split on the byte \\n)")


def read_rows(paths, *, input_format=None, encoding=None, stats=None, parse=True):
    """Rows of JSONL/CSV logs (``.gz`` too, ``-`` for standard input).

    Never raises for bad content: a line that is not JSON, not an object,
    not in the encoding, nested too deep, a CSV record with an unclosed
    quote, or a truncated gzip becomes a :class:`Row` with ``error``.
    Blank lines are not rows; they are counted in ``stats["blank"]``.

    Raises
    ------
    BatchError
        For an unusable input, not a bad row (the command's exit status 2):
        a CSV header that names a column twice (a guess at which one holds
        the text could score the wrong one) or cannot be parsed, an unknown
        encoding, or one that JSONL cannot be split in. Raised before the
        file's first row.

    With ``parse=False`` a JSONL row comes unparsed (its ``json``; blank lines
    and lines not in the encoding are dealt with already): :func:`parsed`
    makes it what ``parse=True`` gives, where it is wanted (a worker process).
    """
    stats = stats if stats is not None else {}
    for path in paths or ["-"]:
        name = "<stdin>" if path == "-" else str(path)
        f = _open_binary(path)
        try:
            yield from read_stream(f, name, input_format=input_format, encoding=encoding, stats=stats, parse=parse)
        finally:
            if f is not sys.stdin.buffer:
                f.close()


def read_stream(f, name, *, input_format=None, encoding=None, stats=None, first_line=1, parse=True):
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
    first_line : int
        The line number of the stream's first line, for a JSONL stream that
        is a block of a larger file (the Dask path splits files on line
        boundaries): rows are numbered, and a BOM skipped, as in the whole file.
    encoding : str, optional
        Default UTF-8 (a BOM is skipped); for CSV without an encoding,
        CP932 when the first megabyte is not UTF-8 but is CP932. The one
        used goes into ``stats["encodings"][name]``.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("blank", 0)
    stats.setdefault("encodings", {})
    fmt = input_format or _format_of(name)
    codec = _codec(encoding)
    _check_jsonl_codec(name, fmt, codec)
    try:
        if fmt == "csv":
            yield from _read_csv(f, name, stats, codec)
        else:
            stats["encodings"][name] = codec or "utf-8"
            yield from _read_jsonl(f, name, stats, codec or "utf-8", first_line, parse)
    except (EOFError, OSError, zlib.error) as e:
        # A truncated or corrupt .gz: the rows before it are out already.
        yield Row(line=0, error=f"{name}: input ends early or is corrupt ({e}); rows after this point are lost", source=name)


def _encoding_label(codec):
    return "UTF-8" if codec == "utf-8" else codec


# Strings removed before counting brackets: a bracket inside a string is text, not nesting.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def _too_deep(line):
    """True when the JSON text ``line`` nests more than :data:`MAX_DEPTH` levels (checked before parsing)."""
    if line.count("[") + line.count("{") <= MAX_DEPTH:  # the common case: too few brackets to matter
        return False
    depth = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub("", line)):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


# strict=False: a raw control character (\r, a tab) inside a string is
# common in exported logs and harmless; the text is still one row. (One
# decoder for every line: json.loads with an option builds one per call.)
_DECODER = json.JSONDecoder(strict=False)


def _read_jsonl(f, name, stats, codec, first_line=1, parse=True):
    # Split on b"\n" only: U+2028 or a lone \r inside a JSON string is not a row break.
    for n, raw in enumerate(f, first_line):
        if n == 1 and codec == "utf-8" and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode(codec)
        except UnicodeDecodeError as e:
            yield Row(n, error=f"line {n} is not valid {_encoding_label(codec)} (byte {e.start}: {e.reason})", source=name)
            continue
        if not line.strip():
            stats["blank"] += 1
            continue
        yield _parse_jsonl(n, line, name) if parse else Row(n, source=name, json=line)


def _parse_jsonl(n, line, name):
    """The Row of line ``n``, a JSONL line neither blank nor undecodable."""
    deep = f"line {n} is JSON nested more than {MAX_DEPTH} levels deep"
    if _too_deep(line):
        return Row(n, error=deep, source=name)
    try:
        obj = _DECODER.decode(line)
    except RecursionError:  # not expected after _too_deep; kept so that no line can stop the run
        return Row(n, error=deep, source=name)
    except ValueError as e:
        return Row(n, error=f"line {n} is not JSON: {e}", source=name)
    if not isinstance(obj, dict):
        return Row(n, error=f"line {n} is a JSON {type(obj).__name__}, expected an object", source=name)
    return Row(n, record=obj, source=name)


class _Joined(io.RawIOBase):
    """Bytes already read (to sniff the encoding) followed by the rest of the stream."""

    def __init__(self, head, rest):
        self.head, self.rest = io.BytesIO(head), rest

    def readable(self):
        return True

    def readinto(self, b):
        n = self.head.readinto(b)
        if n:
            return n
        data = self.rest.read(len(b))
        b[:len(data)] = data
        return len(data)


def _decodes(data, codec):
    try:
        codecs.getincrementaldecoder(codec)().decode(data, final=False)  # a character cut at the end is fine
        return True
    except UnicodeDecodeError:
        return False


def _sniff(f):
    """``(codec, stream)``: UTF-8 unless the first megabyte is not UTF-8 but is CP932; the stream starts afresh."""
    head = f.read(SNIFF_BYTES)
    codec = FALLBACK_ENCODING if not _decodes(head, "utf-8") and _decodes(head, FALLBACK_ENCODING) else "utf-8"
    return codec, io.BufferedReader(_Joined(head, f))


class _RunAway(Exception):
    """A CSV record that has gone on for :data:`MAX_RECORD_LINES` lines: a quote that is never closed."""


class _Lines:
    """The physical lines of a CSV text, numbered, holding the current record's lines.

    When a record turns out to be malformed (an unclosed quote swallows the
    lines after it), :meth:`skip_record` drops its first line and hands the
    others out again, so reading resumes at the next line.
    """

    def __init__(self, text):
        self.text = text
        self.read = 0
        self.held = []
        self.again = deque()

    def __iter__(self):
        return self

    def __next__(self):
        if len(self.held) >= MAX_RECORD_LINES:
            raise _RunAway(f"a quoted field is still open after {MAX_RECORD_LINES} lines")
        if self.again:
            item = self.again.popleft()
        else:
            item = (self.read + 1, next(self.text))
            self.read += 1
        self.held.append(item)
        return item[1]

    def take(self):
        """First line number of the record just read; its lines are let go."""
        first = self.held[0][0] if self.held else self.read
        self.held = []
        return first

    def skip_record(self):
        """``(first, last)`` line numbers of the bad record; its second line on is read again."""
        if not self.held:
            return self.read, self.read
        first, last = self.held[0][0], self.held[-1][0]
        self.again.extendleft(reversed(self.held[1:]))
        self.held = []
        return first, last


def _read_csv(f, name, stats, codec):
    detected = codec is None
    if detected:
        codec, f = _sniff(f)
    stats["encodings"][name] = codec if codec == "utf-8" or not detected else f"{codec} (not UTF-8)"
    # utf-8-sig: a BOM (Excel's "CSV UTF-8") is not part of the first column's name.
    text = io.TextIOWrapper(f, encoding="utf-8-sig" if codec == "utf-8" else codec, errors="surrogateescape",
                            newline="")
    try:
        yield from _csv_rows(_Lines(text), name, stats, codec)
    finally:
        text.detach()


def _csv_rows(lines, name, stats, codec):
    # strict: an unclosed quote at the end of the file, or a character after a
    # closing quote, is an error to report, not a field to guess.
    reader = csv.reader(lines, strict=True)
    header = None
    n = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except (csv.Error, _RunAway) as e:
            first, last = lines.skip_record()
            if header is None:
                raise BatchError(f"input {name}: the CSV header (line {first}) cannot be read: {e}") from None
            why = "a quoted field is not closed" if "unexpected end of data" in str(e) else str(e)
            where = f"line {first}" if first == last else f"lines {first}-{last}"
            yield Row(first, error=f"CSV error in the record at {where}: {why}; the record is skipped "
                                   f"and reading resumes at line {first + 1}", source=name)
            continue
        line = lines.take()
        if not fields:
            stats["blank"] += 1
            continue
        if header is None:
            header = fields
            twice = sorted({c for c in header if c and header.count(c) > 1})
            if twice:
                raise BatchError(f"input {name}: the CSV header names column {twice[0]!r} more than once; "
                                 "rename or remove one of them")
            continue
        n += 1
        bad = [c for c, v in zip(header, fields) if _has_escaped_bytes(v)]
        if bad or any(_has_escaped_bytes(v) for v in fields[len(header):]):
            where = repr(bad[0]) if bad else "an extra field"
            yield Row(line, error=f"row {n} (line {line}) is not valid {_encoding_label(codec)} in {where}", source=name)
            continue
        record = dict(zip(header, fields))
        for column in header[len(fields):]:
            record.setdefault(column, None)  # a short row: as csv.DictReader, missing fields are null
        if len(fields) > len(header):
            record["_extra_fields"] = fields[len(header):]
        yield Row(line, record=record, source=name)


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


def score_rows(model, rows, *, text_field="text", id_field="id", evidence=True):
    """Score a list of rows; return one output record per row, in order.

    Good rows keep their fields and gain ``id``, a probability per label,
    ``flagged`` and ``evidence`` (empty lists with ``evidence=False``); bad
    rows gain ``error`` (and scores where there is a text to score).
    """
    out, texts, where = [], [], []
    for row in map(parsed, rows):
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
        for i, result in zip(where, model.score(texts, evidence=evidence)):
            out[i].update(result)
    return out


class Summary:
    """Counts for the one-line report at the end of a run."""

    def __init__(self):
        self.read = self.scored = self.errors = 0
        self.flagged = {label: 0 for label in LABELS}
        self.started = time.monotonic()
        self.stats = {"blank": 0, "encodings": {}}

    def add(self, records):
        for rec in records:
            self.read += 1
            if "error" in rec:
                self.errors += 1
            else:
                self.scored += 1
            for label in rec.get("flagged", ()):
                self.flagged[label] += 1

    def add_counts(self, errors, flagged):
        """As :meth:`add`, from each record's error flag and flagged labels."""
        self.read += len(errors)
        n_errors = sum(errors)
        self.errors += n_errors
        self.scored += len(errors) - n_errors
        for labels in flagged:
            for label in labels:
                self.flagged[label] += 1

    def as_dict(self):
        seconds = time.monotonic() - self.started
        return {
            "rows_read": self.read,
            "rows_scored": self.scored,
            "rows_with_errors": self.errors,
            "flagged": dict(self.flagged),
            "blank_lines_skipped": self.stats["blank"],
            "encodings": dict(self.stats.get("encodings", {})),
            "seconds": round(seconds, 2),
            "messages_per_second": round(self.read / seconds, 1) if seconds > 0 else None,
        }

    def line(self):
        d = self.as_dict()
        flagged = ", ".join(f"{k} {v}" for k, v in d["flagged"].items())
        return (f"rows read {d['rows_read']}, scored {d['rows_scored']}, with errors {d['rows_with_errors']}; "
                f"flagged: {flagged}; blank lines skipped {d['blank_lines_skipped']}; "
                f"{d['messages_per_second']} messages/s" + encoding_note(self.stats))


def encoding_note(stats):
    """``"; encoding utf-8"``, or the encoding of each input when they differ or one was detected."""
    used = stats.get("encodings") or {}
    if not used:
        return ""
    kinds = set(used.values())
    if len(kinds) == 1 and "(" not in next(iter(kinds)):
        return f"; encoding {next(iter(kinds))}"
    return "; encodings: " + ", ".join(f"{name} {enc}" for name, enc in used.items())


def exit_status(errors, *, allow_errors=False, max_errors=None):
    """The batch commands' exit status for a run that finished.

    Parameters
    ----------
    errors : int
        Rows (or, for ``review``, messages) with an error.
    allow_errors : bool
        Any number of errors is tolerated.
    max_errors : int, optional
        Up to this many errors are tolerated.

    Returns
    -------
    int
        0 when no row failed or the failures are tolerated, else 1.
    """
    if errors == 0 or allow_errors or (max_errors is not None and errors <= max_errors):
        return 0
    return 1


def errors_note(errors, status):
    """The end of the summary line when rows failed: why the status is what it is."""
    if not errors:
        return ""
    if status:
        return "; exit status 1 for the rows with errors (accept them with --allow-errors or --max-errors N)"
    return "; rows with errors accepted"


def check_tolerance(max_errors):
    """Refuse a negative ``--max-errors``."""
    if max_errors is not None and max_errors < 0:
        raise BatchError(f"--max-errors must be 0 or more, got {max_errors}")


def partial_note(output):
    """Where a run that did not finish left its rows (empty for standard output)."""
    if output in (None, "-"):
        return ""
    return f"{output} is unchanged and the rows written are in {output}.partial; "


def output_failed(output, error):
    """The :class:`BatchError` for an output that could not be written (a full disk, a vanished directory)."""
    where = "standard output" if output in (None, "-") else output
    note = partial_note(output).rstrip("; ")
    return BatchError(f"writing {where}: {error.strerror or error}" + (f"; {note}" if note else ""))


def output_format(path):
    """``"csv"`` when ``path`` ends in ``.csv`` or ``.csv.gz``, else ``"jsonl"`` (standard output too)."""
    return "jsonl" if path in (None, "-") else _format_of(path)


def check_output(path, inputs=()):
    """Refuse an output that is one of the inputs, or that cannot be created, before any work.

    Raises
    ------
    BatchError
        Naming the output and what is wrong with it.
    """
    if path in (None, "-"):
        return
    for name in inputs:
        if name != "-" and same_file(name, path):
            raise BatchError(f"output {path} is the input {name}: writing it would erase the input; "
                             "give another output file")
    if os.path.isdir(path):
        raise BatchError(f"output {path}: is a directory")
    if os.path.exists(path) and not os.path.isfile(path):
        return  # /dev/stdout, a named pipe: written in place
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BatchError(f"output {path}: no such directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BatchError(f"output {path}: the directory {folder} is not writable")


@contextlib.contextmanager
def open_output(path):
    """A text stream for the output, whole or not at all.

    Standard output (``path`` None or ``-``) is streamed as the rows come. A
    file is written beside its final name and renamed over it when the
    ``with`` block ends normally (:func:`classifier.fsutil.atomic_file`); on
    an exception the previous file is untouched and what was written is kept
    as ``path.partial``. A name ending in ``.gz`` is gzip-compressed.

    Raises
    ------
    BatchError
        If the file cannot be created.
    """
    if path in (None, "-"):
        yield sys.stdout
        return
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "w", encoding="utf-8", newline="") as f:  # a device or a pipe cannot be renamed over
            yield f
        return
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(atomic_file(path, "wb"))
        except OSError as e:
            raise BatchError(f"output {path}: {e.strerror or e}") from None
        if str(path).lower().endswith(".gz"):
            # mtime=0 and the final name: the same rows give the same bytes, and no temporary name inside.
            f = stack.enter_context(gzip.GzipFile(Path(path).name.removesuffix(".gz"), "wb", fileobj=f, mtime=0))
        stream = io.TextIOWrapper(f, encoding="utf-8", newline="")
        stack.callback(stream.detach)  # flushes; the file itself is closed by gzip/atomic_file in turn
        yield stream


_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(value):
    """``value`` with NaN and infinities (which JSON has no words for) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False)


def _json(value):
    """Valid JSON text in any encoding: no bare NaN, lone surrogates written as ``\\udXXX`` escapes."""
    try:
        text = _ENCODER.encode(value)
    except ValueError:  # a NaN or an infinity somewhere in the row
        text = _ENCODER.encode(_finite(value))
    # A lone surrogate (from a "\ud800" escape in the input) cannot be encoded as UTF-8; escaped, it round-trips.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def to_json_line(record):
    """One JSON line; U+2028/U+2029 escaped so no line-splitter breaks the row."""
    return _json(record).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


#: Score output's CSV columns: these first, then the input's fields, then these.
SCORE_FRONT = ("id", *LABELS, "flagged", "error")
SCORE_BACK = ("evidence",)


class Writer:
    """Writes output records as JSONL or CSV, one whole line per write.

    CSV starts with a BOM (so that Excel reads it as UTF-8), and with
    ``csv_escape`` a text cell starting with ``= + - @``, a tab or a carriage
    return gets a leading ``'`` so that a spreadsheet shows it instead of
    running it as a formula. Columns come from the first records: ``front``,
    the other fields, ``back``, then ``_extra`` (fields first seen later, as JSON).
    """

    def __init__(self, stream, fmt="jsonl", *, csv_escape=True, front=SCORE_FRONT, back=SCORE_BACK):
        self.stream = stream
        self.fmt = fmt
        self.csv_escape = csv_escape
        self.front, self.back = list(front), list(back)
        self.columns = None

    def write(self, records):
        if self.fmt == "jsonl":
            self.stream.write("".join(to_json_line(r) for r in records))
        else:
            self._write_csv(records)
        self.stream.flush()

    def write_lines(self, lines):
        """JSON lines already made by :func:`to_json_line` (JSONL output only)."""
        self.stream.write("".join(lines))
        self.stream.flush()

    def _write_csv(self, records):
        if not records:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if self.columns is None:
            keys = []
            for rec in records:
                keys += [k for k in rec if k not in keys]
            middle = [k for k in keys if k not in self.front and k not in self.back]
            self.columns = self.front + middle + self.back + ["_extra"]
            buf.write("\ufeff")
            writer.writerow(self.columns)
        for rec in records:
            extra = {k: v for k, v in rec.items() if k not in self.columns}
            rec = {**rec, "_extra": _json(extra) if extra else ""}
            writer.writerow([self._cell(rec.get(c, "")) for c in self.columns])
        self.stream.write(buf.getvalue())

    def _cell(self, value):
        if isinstance(value, float) and not math.isfinite(value):
            return ""
        if isinstance(value, (list, dict)):
            return _json(value)
        if isinstance(value, str):
            value = _SURROGATE.sub("\ufffd", value)  # CSV has no escapes: a lone surrogate becomes U+FFFD
            if self.csv_escape and value.startswith(FORMULA_STARTS):
                value = "'" + value
        return value


# --- parallel scoring -------------------------------------------------------
#
# Workers are forked from the command once the model is loaded and the
# garbage collector's objects frozen (gc.freeze): each worker starts in
# milliseconds with the parent's model, whose pages it shares copy-on-write,
# instead of loading and checking a copy of its own. A worker scores a chunk
# and, for JSONL output, also writes its lines, so that the command itself
# only reads, hands out and joins.

_worker_model = None
_worker_evidence = True

#: Linux prctl option: a signal for this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def _init_worker(model_path, parent=None, evidence=True):
    global _worker_model, _worker_evidence
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    _worker_evidence = evidence
    if _worker_model is None:  # not inherited (a start method other than fork)
        from .model import load

        _worker_model = load(model_path)


def _die_with_parent(parent):
    """End this worker when process ``parent`` ends, however it ends.

    A worker whose parent was killed with SIGKILL would otherwise wait on
    its task pipe forever (its siblings keep the pipe open).
    """
    # Forked workers inherit the parent's SIGTERM handler, which raises in code that does not expect it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # Elsewhere (and as a backstop): a thread that notices being re-parented.
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _score_in_worker(rows, text_field, id_field):
    return score_rows(_worker_model, rows, text_field=text_field, id_field=id_field, evidence=_worker_evidence)


class _Written:
    """A chunk's output already written as JSON lines, with what the summary and ``--only-flagged`` need."""

    __slots__ = ("lines", "errors", "flagged")

    def __init__(self, records):
        self.lines = [to_json_line(r) for r in records]
        self.errors = ["error" in r for r in records]
        self.flagged = [tuple(r.get("flagged", ())) for r in records]

    def __len__(self):
        return len(self.lines)


def _work(rows, text_field, id_field, as_lines):
    records = _score_in_worker(rows, text_field, id_field)
    return _Written(records) if as_lines else records


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
    for row in map(parsed, chunk):
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
              id_field="id", only_flagged=False, progress=None, chunk_size=None, evidence=True):
    """Score rows and write them; return normally even when interrupted.

    With ``jobs`` > 1 the model (``model``, else loaded from ``model_path``)
    is loaded once, here, and the worker processes forked from this one share it.
    ``chunk_size`` defaults to :data:`CHUNK` rows, :data:`WORKER_CHUNK` per worker task.

    Returns
    -------
    str or None
        The signal name if SIGINT or SIGTERM stopped the run.
    """
    def emit(records):
        if isinstance(records, _Written):
            summary.add_counts(records.errors, records.flagged)
            lines = records.lines
            if only_flagged:
                lines = [line for line, e, f in zip(lines, records.errors, records.flagged) if e or f]
            writer.write_lines(lines)
            n = len(lines)
        else:
            summary.add(records)
            if only_flagged:
                records = [r for r in records if r.get("flagged") or "error" in r]
            writer.write(records)
            n = len(records)
        if progress is not None:
            progress.update(n)

    # Signal handlers can only be set from the main thread; a Dask worker
    # runs this in a thread of its own, where its nanny deals with signals.
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        from .model import load

        model = model or load(model_path)
        if jobs <= 1:
            chunk_size = chunk_size or CHUNK
            for chunk in _chunks(rows, chunk_size):
                emit(score_rows(model, chunk, text_field=text_field, id_field=id_field, evidence=evidence))
        else:
            _run_parallel(rows, emit, model, model_path, jobs, text_field, id_field, chunk_size or WORKER_CHUNK, evidence,
                          as_lines=writer.fmt == "jsonl")
    except (KeyboardInterrupt, _Interrupted) as e:
        return str(e) or "SIGINT"
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)
    return None


def _fork_context():
    import multiprocessing

    try:
        return multiprocessing.get_context("fork")
    except ValueError:  # no fork (Windows): each worker loads the model itself
        return None


def _run_parallel(rows, emit, model, model_path, jobs, text_field, id_field, chunk_size, evidence, as_lines):
    global _worker_model
    import gc

    context = _fork_context()
    if context is not None:
        _worker_model = model  # inherited by the forked workers
    initargs = (model_path, os.getpid(), evidence)

    def new_pool():
        return ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=initargs)

    # The objects that exist now (the model) are left out of the collector's
    # passes while workers are forked (which happens on demand, at a submit):
    # in a worker the collector never writes to, and so copies, the pages it shares.
    gc.collect()
    gc.freeze()

    def submit(pool, chunk):
        return pool.submit(_work, chunk, text_field, id_field, as_lines)

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
                pending.append((chunk, submit(pool, chunk)))
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
                        emit(submit(pool, c).result())
                    except BrokenProcessPool:
                        emit(_died(c, text_field, id_field))
                        _discard(pool)
                        pool = new_pool()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        gc.unfreeze()
        if context is not None:
            _worker_model = None


def _discard(pool):
    """Shut down a broken pool without waiting on its survivors.

    A worker that dies abruptly can leave a queue lock taken, and the
    survivors then block on it forever, hanging the interpreter at exit
    (CPython gh-94777, fixed in 3.12): kill them first.
    """
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
