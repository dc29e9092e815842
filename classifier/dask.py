"""Scoring on a Dask cluster: log files as partitions, or a Dask DataFrame.

Two ways in, one scoring function (:func:`classifier.batch.score_rows`):

* :func:`score_logs` (``python -m classifier score ... --dask``) splits each
  plain JSONL input larger than the block size into byte-range blocks on line
  boundaries (``dask.bytes.read_bytes(..., delimiter=b"\n")``); a ``.gz`` or
  CSV file (a quoted field may hold a newline) is one block. A worker reads
  a block with the local command's reader (:func:`classifier.batch.read_stream`,
  numbering its lines from where the block starts in its file), scores it
  with the local command's loop (:func:`classifier.batch.run_batch`) and
  writes one output file into the output folder, so the outputs,
  concatenated in name order, are the local command's output (for JSONL;
  each CSV output file has its own header).
* :func:`score_frame` adds the score columns to a Dask DataFrame, lazily.

Tasks carry the model's path, never the model: each worker process loads a
model once (verified as :func:`classifier.load` verifies it) and keeps it for
every partition after. Needs the ``dask`` extra: ``pip install -e '.[dask]'``.
"""

import contextlib
import glob
import io
import json
import os
import posixpath
import sys
import threading
import uuid
from pathlib import Path

try:
    import distributed
    import fsspec
    from fsspec.core import OpenFile, split_protocol, url_to_fs
except ImportError as e:
    raise ImportError(f"classifier.dask needs Dask ({e}); install it with `pip install -e '.[dask]'`") from None

from . import batch
from .model import LABELS, load

__all__ = ["score_frame", "score_logs", "score_files", "local_cluster", "block_size", "SUMMARY_FILE"]

#: Written into the output folder last, once every partition is done.
SUMMARY_FILE = "_summary.json"
#: Plain JSONL inputs larger than this are split into blocks of at most about this size (see :func:`block_size`).
BLOCKSIZE = "2MiB"

# --- the model, once per worker process ------------------------------------

_models = {}
_models_lock = threading.Lock()


def _model(path):
    """The model at ``path`` (None: the default), loaded once per process."""
    key = None if path is None else str(path)
    with _models_lock:
        if key not in _models:
            _models[key] = load(key)
        return _models[key]


def _model_arg(model_path):
    # A relative path would be resolved in each worker's directory; None
    # stays None so that each worker finds its own installed default.
    return None if model_path is None else str(Path(model_path).resolve())


# --- DataFrames -------------------------------------------------------------


def score_frame(ddf, text_field="text", model_path=None):
    """Add score columns to a Dask DataFrame, lazily.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        One message per row.
    text_field : str
        The column holding the messages.
    model_path : str or Path, optional
        A model directory that the workers can read; default: each worker's
        shipped model (or ``$CLASSIFIER_MODEL``).

    Returns
    -------
    dask.dataframe.DataFrame
        ``ddf`` with, per row: a probability column per label (NaN where
        nothing could be scored), ``flagged`` (the flagged labels joined by
        ``,``; empty when none, missing when not scored), ``evidence`` (the
        spans as JSON text) and ``error`` (missing when the row is fine), as
        in the local command. Existing columns of these names are replaced.

    Raises
    ------
    KeyError
        If ``text_field`` is not a column.
    """
    import pandas as pd

    if text_field not in ddf.columns:
        raise KeyError(f"no {text_field!r} column to score; the columns are {list(ddf.columns)}")
    meta = ddf._meta.assign(**{label: pd.Series(dtype="float64") for label in LABELS},
                            **{name: pd.Series(dtype=pd.StringDtype()) for name in ("flagged", "evidence", "error")})
    return ddf.map_partitions(_score_pandas, text_field, _model_arg(model_path), meta=meta)


def _score_pandas(pdf, text_field, model_path):
    import pandas as pd

    texts = [None if v is pd.NA else v for v in pdf[text_field].tolist()]
    rows = [batch.Row(n, record={text_field: text}) for n, text in enumerate(texts, 1)]
    records = batch.score_rows(_model(model_path), rows, text_field=text_field) if rows else []

    def column(values, dtype):
        return pd.Series(values, index=pdf.index, dtype=dtype)

    out = pdf.assign(**{label: column([r.get(label) for r in records], "float64") for label in LABELS})
    return out.assign(
        flagged=column([",".join(r["flagged"]) if "flagged" in r else None for r in records], pd.StringDtype()),
        evidence=column([batch._json(r["evidence"]) if "evidence" in r else None for r in records], pd.StringDtype()),
        error=column([r.get("error") for r in records], pd.StringDtype()),
    )


# --- log files --------------------------------------------------------------


def score_logs(inputs, output, *, client, model_path=None, input_format=None, output_format="jsonl",
               text_field="text", id_field="id", only_flagged=False, summary=None, encoding=None, csv_escape=True,
               blocksize=None, evidence=True):
    """Score log files on a Dask cluster: one partition and one output file per block of an input file.

    A plain JSONL file larger than the block size is split into blocks of
    about that size on line boundaries; any other input is one block. Output file
    ``k`` (counting the blocks of all inputs in order) is named
    ``{k:05d}-{input name}.jsonl`` (or ``.csv``; ``-{b}of{n}`` added for the
    blocks of a split file), so the files in name order hold the local
    command's output for the same inputs, rows in input order.
    ``_summary.json`` is written last; its totals are the local command's.
    A worker that dies costs its partition a retry (Dask's
    ``distributed.scheduler.allowed-failures``).

    Parameters
    ----------
    inputs : list of str
        JSONL/CSV files (``.gz`` too) or glob patterns, local or fsspec URLs
        (``s3://...`` with ``s3fs`` installed); the workers must be able to
        read them.
    output : str
        A folder, new or empty, that the workers can write to.
    client : distributed.Client
    model_path, input_format, text_field, id_field, only_flagged, encoding, csv_escape, evidence
        As for the local command (``--encoding``, ``--no-csv-escape``, ``--no-evidence``).
    output_format : {"jsonl", "csv"}
    blocksize : int or str, optional
        Bytes (``"2MiB"``) per block of a split file. By default at most
        :data:`BLOCKSIZE`, and as many blocks as a multiple of the cluster's
        workers, so that each worker gets the same share of a file.
    summary : classifier.batch.Summary, optional
        Gains the counts of every partition written (the command prints its line).

    Returns
    -------
    dict
        The local command's summary counts, plus ``partitions`` (per block:
        its input, output and counts) and ``failed`` (inputs whose partition
        could not be written, with the reason; empty when all were).

    Raises
    ------
    BatchError
        If an input is missing, its CSV header unusable, or the output folder not empty.
    """
    _check_blocksize(blocksize)
    sources = _expand(inputs, input_format=input_format, encoding=encoding)
    out_fs, root = _output_folder(output)
    workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    # Per input: its blocks (delayed bytes), or None when it is read whole.
    blocks = [_blocks(name, source, blocksize, input_format, workers) for name, source in sources]
    total = sum(len(b) if b else 1 for b in blocks)
    width = max(5, len(str(total - 1)))
    options = dict(model_path=_model_arg(model_path), input_format=input_format, output_format=output_format,
                   text_field=text_field, id_field=id_field, only_flagged=only_flagged, encoding=encoding,
                   csv_escape=csv_escape, evidence=evidence)
    run = uuid.uuid4().hex[:8]
    futures, owners, held, k = [], [], [], 0
    for (name, source), parts in zip(sources, blocks):
        if not parts:
            out = posixpath.join(root, f"{k:0{width}d}-{_stem(name)}.{output_format}")
            futures.append(client.submit(_score_file, name, source, out_fs, out, **options,
                                         key=f"classifier-score-{run}-{k}", pure=False))
            owners.append(name)
            k += 1
            continue
        # A block's first line number is 1 + the newlines of the blocks before it.
        data = client.compute(parts)
        newlines = [client.submit(_newlines, d, key=f"classifier-lines-{run}-{k + b}") for b, d in enumerate(data[:-1])]
        held += data + newlines
        for b, d in enumerate(data):
            out = posixpath.join(root, f"{k:0{width}d}-{_stem(name)}-{b + 1}of{len(data)}.{output_format}")
            futures.append(client.submit(_score_block, name, d, newlines[:b], out_fs, out, **options,
                                         key=f"classifier-score-{run}-{k}", pure=False))
            owners.append(name)
            k += 1
    summary = summary if summary is not None else batch.Summary()
    parts, failed = [None] * len(futures), []
    try:
        for i, future in enumerate(futures):
            try:
                parts[i] = future.result()
            except Exception as e:  # a partition failed as a whole (a worker killed 3 times, a full disk)
                failed.append({"input": owners[i], "error": f"{type(e).__name__}: {e}"})
    finally:
        client.cancel(futures + held)
    for part in filter(None, parts):
        _add_counts(summary, part)
    result = {**summary.as_dict(), "partitions": [p for p in parts if p], "failed": failed}
    for tmp in out_fs.glob(posixpath.join(root, "*.tmp")):  # left by a worker that died mid-partition
        out_fs.rm(tmp)
    with out_fs.open(posixpath.join(root, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=2)
    return result


def block_size(size, blocksize=None, workers=1):
    """The block size to split a file of ``size`` bytes with: ``blocksize`` if given; else :data:`BLOCKSIZE`,
    made smaller where that gives a number of blocks that is a multiple of ``workers`` (a block more than a
    worker's share leaves the others idle while it runs).

    ``dask.bytes.read_bytes`` cuts a file into ``size // blocksize`` blocks
    of equal size (one, if the file is smaller).
    """
    from dask.utils import parse_bytes

    if blocksize is not None:
        return parse_bytes(blocksize)
    largest = parse_bytes(BLOCKSIZE)
    if size < 2 * largest:  # one block, or two that a worker count may not divide: as read_bytes would
        return largest
    n = -(-(size // largest) // workers) * workers
    return size // n


def _blocks(name, source, blocksize, input_format, workers=1):
    """The delayed byte blocks of a plain JSONL input larger than its block size, else None (read whole)."""
    if name.endswith(".gz") or (input_format or batch._format_of(name)) == "csv":
        return None  # gzip cannot be entered midway; a CSV record may span lines
    size = source.fs.size(source.path)
    blocksize = block_size(size, blocksize, workers)
    if size <= blocksize:
        return None
    from dask.bytes import read_bytes

    _, [parts] = read_bytes(source.fs.unstrip_protocol(source.path), delimiter=b"\n", blocksize=blocksize,
                            sample=False)
    return parts


def _newlines(block):
    return block.count(b"\n")


def _score_block(name, block, newlines_before, out_fs, out_path, **options):
    """On a worker: one block of a file in (its lines numbered as in the file), one output file out."""
    first_line = 1 + sum(newlines_before)
    return _score_file(name, contextlib.nullcontext(io.BytesIO(block)), out_fs, out_path, first_line=first_line,
                       **options)


def _score_file(name, source, out_fs, out_path, *, model_path, input_format, output_format, text_field, id_field,
                only_flagged, encoding=None, csv_escape=True, evidence=True, first_line=1):
    """On a worker: one input file (or block) in, one output file out; its counts back."""
    model = _model(model_path)
    summary = batch.Summary()
    # Written aside and moved into place whole: a retry after a worker died
    # starts afresh, and no one sees half a file under the final name.
    tmp = f"{out_path}.{uuid.uuid4().hex}.tmp"
    with source as f, out_fs.open(tmp, "w", encoding="utf-8", newline="") as stream:
        rows = batch.read_stream(f, name, input_format=input_format, encoding=encoding, stats=summary.stats,
                                 first_line=first_line)
        batch.run_batch(rows, batch.Writer(stream, output_format, csv_escape=csv_escape), summary, model=model,
                        text_field=text_field, id_field=id_field, only_flagged=only_flagged, evidence=evidence)
    out_fs.mv(tmp, out_path)
    return {"input": name, "output": posixpath.basename(out_path), "first_line": first_line, **summary.as_dict()}


def _add_counts(summary, part):
    summary.read += part["rows_read"]
    summary.scored += part["rows_scored"]
    summary.errors += part["rows_with_errors"]
    summary.stats["blank"] += part["blank_lines_skipped"]
    for label, n in part["flagged"].items():
        summary.flagged[label] += n
    summary.stats.setdefault("encodings", {}).update(part.get("encodings", {}))


def _expand(inputs, *, input_format=None, encoding=None):
    """``(name, OpenFile)`` per input file, in order, globs sorted.

    Local names stay as given (relative ones too, as a shell expands them),
    so errors name a file as the local command does.
    """
    if not inputs:
        raise batch.BatchError("--dask needs input files (standard input cannot be split across workers)")
    sources = []
    for pattern in inputs:
        if pattern == "-":
            raise batch.BatchError("--dask reads files, not standard input")
        magic = any(c in pattern for c in "*?[")
        if split_protocol(pattern)[0] is None:
            names = sorted(glob.glob(pattern)) if magic else [pattern]
            batch.check_inputs(names, input_format=input_format, encoding=encoding)
            fs, paths = fsspec.filesystem("file"), [os.path.abspath(n) for n in names]
        else:
            try:
                fs, path = url_to_fs(pattern)
                paths = sorted(fs.glob(path)) if magic else [path]
                if not magic and not fs.isfile(path):
                    raise batch.BatchError(f"input {pattern}: no such file")
            except (ImportError, ValueError, OSError) as e:  # e.g. "Install s3fs to access S3"
                raise batch.BatchError(f"input {pattern}: {e}") from None
            names = [pattern] if not magic else [fs.unstrip_protocol(p) for p in paths]
        if not names:
            raise batch.BatchError(f"input {pattern}: no files match")
        for name, path in zip(names, paths):
            compression = "gzip" if name.endswith(".gz") else None  # as the local command: .gz only
            sources.append((name, OpenFile(fs, path, mode="rb", compression=compression)))
    return sources


def _check_blocksize(blocksize):
    """A BatchError unless ``blocksize`` is None (the default) or a size of at least 1 byte."""
    if blocksize is None:
        return
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(blocksize)
    except (ValueError, TypeError):
        raise batch.BatchError(f"--blocksize {blocksize}: not a size (e.g. 2MiB, 500kB, 1000000)") from None
    if size < 1:
        raise batch.BatchError(f"--blocksize must be at least 1 byte, got {blocksize}")


def _output_folder(output, create=True):
    if not output or output == "-":
        raise batch.BatchError("--dask writes a folder of files: give it with -o FOLDER")
    try:
        fs, root = url_to_fs(output)
        if fs.exists(root):
            if not fs.isdir(root):
                raise batch.BatchError(f"output {output}: is a file; --dask writes a folder of files")
            if fs.ls(root):
                raise batch.BatchError(f"output {output}: the folder is not empty; give a new or empty folder")
        if create:
            fs.makedirs(root, exist_ok=True)
    except (ImportError, ValueError, OSError) as e:
        raise batch.BatchError(f"output {output}: {e}") from None
    return fs, root


def _stem(name):
    base = posixpath.basename(name.removesuffix(".gz"))
    return os.path.splitext(base)[0] or base


# --- command line -----------------------------------------------------------


def _load_everywhere(client, model_path):
    """Load (and check) the model on each worker of ``client``'s cluster, in parallel; a load error is raised."""
    run = uuid.uuid4().hex[:8]
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    futures = [client.submit(_loaded, model_path, workers=[w], allow_other_workers=False, pure=False,
                             key=f"classifier-load-{run}-{i}") for i, w in enumerate(workers)]
    try:
        client.gather(futures)
    finally:
        client.cancel(futures)


def _loaded(model_path):
    _model(model_path)  # (the model stays in the worker; nothing comes back)


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _client(scheduler):
    """A client of the scheduler at ``scheduler``, else of a new LocalCluster (a worker process per core)."""
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as e:
            raise batch.BatchError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        with client:
            yield client
    else:
        with local_cluster(_cores()) as cluster, distributed.Client(cluster) as client:
            yield client


def local_cluster(n_workers, **kwargs):
    """The LocalCluster ``score --dask`` starts: ``n_workers`` processes of one thread each.

    Its workers keep glibc's own malloc trimming: Dask's nanny sets
    ``MALLOC_TRIM_THRESHOLD_=65536`` for the processes it starts (config
    ``distributed.nanny.pre-spawn-environ``), under which this workload, many
    small objects a message, scores about 15 % fewer messages a second (compare
    ``MALLOC_TRIM_THRESHOLD_=65536 python -m classifier score LOG -o OUT`` with
    the same command without it).
    """
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, **kwargs)


def score_files(args):
    """``python -m classifier score --dask``: score, print the summary line, return the exit status.

    The exit status is the local command's: 0, or 1 when rows have errors
    (unless tolerated by ``--allow-errors``/``--max-errors``) or a partition
    could not be written.
    """
    if args.jobs != 1:
        raise batch.BatchError("--jobs is for local scoring; with --dask the cluster's workers do the work")
    # Quick to get wrong, slow to find out after a cluster has started: check first.
    _expand(args.inputs, input_format=args.input_format, encoding=args.encoding)
    _check_blocksize(getattr(args, "blocksize", None))
    _output_folder(args.output, create=False)
    with _client(args.scheduler) as client:
        n = len(client.scheduler_info(n_workers=-1)["workers"])
        print(f"Dask: scheduler {client.scheduler.address}, {n} workers", file=sys.stderr)
        # Every worker loads the model now, all at once (a model that does not load is one clear error, raised
        # here, before any output); this process never loads it.
        _load_everywhere(client, _model_arg(args.model))
        summary = batch.Summary()
        try:
            result = score_logs(args.inputs, args.output, client=client, model_path=args.model,
                                input_format=args.input_format, output_format=args.format or "jsonl",
                                text_field=args.text_field, id_field=args.id_field, only_flagged=args.only_flagged,
                                summary=summary, encoding=args.encoding, csv_escape=args.csv_escape,
                                blocksize=getattr(args, "blocksize", None), evidence=getattr(args, "evidence", True))
        except KeyboardInterrupt:
            print(f"interrupted; {args.output} holds the partitions finished so far, and no {SUMMARY_FILE}",
                  file=sys.stderr)
            return 130
        # Printed before the cluster shuts down, which takes a while and is not scoring.
        for failure in result["failed"]:
            print(f"error: {failure['input']}: not scored: {failure['error']}", file=sys.stderr)
        status = batch.exit_status(summary.errors, allow_errors=args.allow_errors, max_errors=args.max_errors)
        print(f"{len(result['partitions'])} files written to {args.output}; {summary.line()}"
              + batch.errors_note(summary.errors, status), file=sys.stderr)
    # A partition that could not be written is never tolerated: its rows are missing, not reported.
    return 1 if result["failed"] else status
