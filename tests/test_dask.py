"""Scoring on a Dask cluster: the same rows as the local command, from any partition layout.

The clusters here are real (worker processes), small (two workers, one thread
each), and every wait has a deadline so that a broken cluster fails the test
instead of hanging it.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dask.dataframe as dd
import distributed
import pytest

from classifier import LABELS
from classifier.cli import main
from classifier.dask import SUMMARY_FILE, _cores, score_frame, score_logs
from conftest import ROOT, read_jsonl

#: Seconds any one cluster job may take before the test fails instead of hanging.
DEADLINE = 180

# Good lines and one of each kind of bad line, as raw bytes. Line 2 has no id,
# so its id is its line number: partitions must number lines per file, as the
# local command does.
MIXED_JSONL = [
    json.dumps({"id": "m1", "text": "LINEのIDを送るのでそちらで話しましょう", "sender": "client"}, ensure_ascii=False).encode(),
    json.dumps({"text": "他の人はもう仕事を始めている。"}, ensure_ascii=False).encode(),
    b"{not json",
    b'["a", "list"]',
    b'{"id": "m3"}',
    b'{"id": "m4", "text": null}',
    b'{"id": "m5", "text": 42}',
    b'{"id": "m7", "text": NaN}',
    b'{"id": "m8", "text": ""}',
    b'{"id": "m9", "text": "\xff\xfe bad bytes"}',
    b"",
    '{"id": "m10", "text": "一行目\u2028二行目\rまだ同じ行"}'.encode(),
    json.dumps({"id": "m11", "text": "あ" * 120_000}).encode(),
    json.dumps({"id": "m12", "text": "納品しました", "extra": {"k": [1, 2]}}, ensure_ascii=False).encode(),
]

TEXTS = [
    "はじめまして。ブログ記事の作成をお願いしたく、スカウトさせていただきました。",
    "LINEのIDを教えてください。そちらで詳しくお話しします。",
    "修正版を添付しました。ご確認よろしくお願いします。",
    "他の方はみなさん直接契約に切り替えています。手数料がもったいないですよ。",
]


def _messages(n, prefix):
    return [{"id": f"{prefix}{i}", "text": TEXTS[i % len(TEXTS)]} for i in range(n)]


def _jsonl_bytes(rows):
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _logs(folder):
    """Five inputs: bad rows of every kind, gzip, CSV, a truncated gzip, an empty file."""
    folder.mkdir(exist_ok=True)
    mixed = folder / "a-mixed.jsonl"
    mixed.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(MIXED_JSONL) + b"\r\n")
    good = folder / "b-good.jsonl.gz"
    good.write_bytes(gzip.compress(_jsonl_bytes(_messages(30, "g"))))
    table = folder / "c-table.csv"
    # A quoted newline, a row that is not UTF-8, a row with an extra field, an empty text.
    csv_text = 'id,text,sender\r\nc1,"一行目\n二行目、LINEはこちら taro_0000",client\r\nc2,BAD,client\r\n' \
               "c3,納品しました,worker,extra\r\nc4,,client\r\n"
    table.write_bytes(csv_text.encode().replace(b"BAD", b"\xff bad"))
    cut = folder / "d-cut.jsonl.gz"
    whole = gzip.compress(_jsonl_bytes(_messages(200, "t")))
    cut.write_bytes(whole[: len(whole) // 2])
    empty = folder / "e-empty.jsonl"
    empty.write_bytes(b"")
    return [str(p) for p in (mixed, good, table, cut, empty)]


def _local(inputs, out, *options):
    """The local command's output for ``inputs``, as bytes."""
    assert main(["score", *inputs, "-o", str(out), *options]) in (0, 1)  # 1: rows with errors
    return out.read_bytes()


def _partitions(folder):
    return sorted(p for p in folder.iterdir() if p.name != SUMMARY_FILE)


def _within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, failing the test after ``seconds`` instead of hanging it."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def _cluster():
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")


@pytest.fixture(scope="module")
def client():
    with _cluster() as cluster, distributed.Client(cluster, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    inputs = _logs(folder)
    return inputs, _local(inputs, folder.parent / "local.jsonl")


def test_cluster_gives_exactly_the_local_rows(client, logs, tmp_path):
    inputs, local = logs
    result = _within(DEADLINE, score_logs, inputs, str(tmp_path / "out"), client=client)
    parts = _partitions(tmp_path / "out")
    assert [p.name for p in parts] == ["00000-a-mixed.jsonl", "00001-b-good.jsonl", "00002-c-table.jsonl",
                                       "00003-d-cut.jsonl", "00004-e-empty.jsonl"]
    assert b"".join(p.read_bytes() for p in parts) == local
    rows = read_jsonl(local.decode())
    assert any("not valid UTF-8" in r.get("error", "") for r in rows)
    assert "ends early or is corrupt" in rows[-1]["error"]
    assert next(r for r in rows if r["id"] == "c1")["text"].count("\n") == 1  # a quoted newline is not a row break
    assert result["failed"] == []
    assert result["rows_read"] == len(rows) == sum(p["rows_read"] for p in result["partitions"])
    assert result["rows_with_errors"] == sum("error" in r for r in rows)
    assert result["blank_lines_skipped"] == 1
    assert json.loads((tmp_path / "out" / SUMMARY_FILE).read_text(encoding="utf-8"))["rows_read"] == len(rows)


def test_each_worker_loads_the_model_once(client, tmp_path):
    inputs = []
    for i in range(6):  # more partitions than workers
        inputs.append(tmp_path / f"log{i}.jsonl")
        inputs[-1].write_bytes(_jsonl_bytes(_messages(3, f"{i}-")))
    inputs = [str(p) for p in inputs]
    _within(DEADLINE, score_logs, inputs, str(tmp_path / "one"), client=client)
    first = _within(DEADLINE, client.run, _cached_models)
    _within(DEADLINE, score_logs, inputs, str(tmp_path / "two"), client=client)
    assert _within(DEADLINE, client.run, _cached_models) == first
    assert sorted(len(models) for models in first.values()) == [1, 1]


def _cached_models():
    from classifier import dask

    return {path: id(model) for path, model in dask._models.items()}


def test_csv_output_and_only_flagged_as_the_local_command(client, logs, tmp_path):
    inputs, _ = logs
    local = _local(inputs[1:2], tmp_path / "local.csv", "--format", "csv", "--only-flagged")
    _within(DEADLINE, score_logs, inputs[1:2], str(tmp_path / "out"), client=client, output_format="csv", only_flagged=True)
    [part] = _partitions(tmp_path / "out")
    assert part.name == "00000-b-good.csv" and part.read_bytes() == local
    assert 1 < len(local.splitlines()) < 31  # a header and the flagged rows only


def test_fsspec_urls_and_globs(client, tmp_path):
    for name in ("x1.jsonl", "x2.jsonl"):
        (tmp_path / name).write_bytes(_jsonl_bytes(_messages(5, name)))
    local = _local([str(tmp_path / "x1.jsonl"), str(tmp_path / "x2.jsonl")], tmp_path / "local.jsonl")
    result = _within(DEADLINE, score_logs, [f"file://{tmp_path}/x*.jsonl"], str(tmp_path / "out"), client=client)
    assert b"".join(p.read_bytes() for p in _partitions(tmp_path / "out")) == local
    assert [p["input"] for p in result["partitions"]] == [f"file://{tmp_path}/x1.jsonl", f"file://{tmp_path}/x2.jsonl"]


def test_cli_on_a_running_scheduler(client, logs, tmp_path):
    inputs, local = logs
    folder = os.path.dirname(inputs[0])
    proc = subprocess.run([sys.executable, "-m", "classifier", "score", f"{folder}/*", "--dask",
                           "--scheduler", client.scheduler.address, "-o", str(tmp_path / "out")],
                          capture_output=True, timeout=DEADLINE, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr.decode()  # as the local command: some rows have errors
    assert b"".join(p.read_bytes() for p in _partitions(tmp_path / "out")) == local
    rows = read_jsonl(local.decode())
    errors = sum("error" in r for r in rows)
    assert f"5 files written to {tmp_path / 'out'}; rows read {len(rows)}, scored {len(rows) - errors}" in proc.stderr.decode()


def test_a_model_that_does_not_load_is_one_clear_error_before_any_output(client, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(_jsonl_bytes(_messages(3, "m")))
    proc = subprocess.run([sys.executable, "-m", "classifier", "score", str(log), "--dask", "--scheduler",
                           client.scheduler.address, "--model", str(tmp_path / "no-model"), "-o", str(tmp_path / "out")],
                          capture_output=True, timeout=DEADLINE, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr.decode()
    assert f"{tmp_path / 'no-model'} is not a model directory" in proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_starts_a_local_cluster(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(_jsonl_bytes(_messages(20, "m")))
    local = _local([str(log)], tmp_path / "local.jsonl")
    proc = subprocess.run([sys.executable, "-m", "classifier", "score", str(log), "--dask", "-o", str(tmp_path / "out")],
                          capture_output=True, timeout=DEADLINE, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "out" / "00000-log.jsonl").read_bytes() == local
    assert f", {_cores()} workers" in proc.stderr.decode()  # one per core
    assert b"Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_killed_worker_costs_a_retry_not_the_job(tmp_path):
    inputs = [tmp_path / "big.jsonl", tmp_path / "small.jsonl"]
    inputs[0].write_bytes(b"\n".join(MIXED_JSONL[:10]) + b"\n" + _jsonl_bytes(_messages(800, "b")))
    inputs[1].write_bytes(_jsonl_bytes(_messages(10, "s")))
    inputs = [str(p) for p in inputs]
    local = _local(inputs, tmp_path / "local.jsonl")
    out = tmp_path / "out"
    with _cluster() as cluster, distributed.Client(cluster, timeout=60) as client, ThreadPoolExecutor(1) as pool:
        pids = _within(DEADLINE, client.run, os.getpid)
        job = pool.submit(score_logs, inputs, str(out), client=client)
        deadline = time.monotonic() + DEADLINE
        # A half-written output of the big partition: its worker is mid-partition.
        while not list(out.glob("00000-big.jsonl.*.tmp")):
            assert time.monotonic() < deadline and not job.done(), "the big partition never started"
            time.sleep(0.05)
        [worker] = [w for w, keys in client.processing().items() if any(str(k).endswith("-0") for k in keys)]
        os.kill(pids[worker], signal.SIGKILL)
        result = job.result(timeout=DEADLINE)
        assert pids[worker] not in _within(DEADLINE, client.run, os.getpid).values()
    assert result["failed"] == []
    assert b"".join(p.read_bytes() for p in _partitions(out)) == local
    assert not list(out.glob("*.tmp"))


def test_score_frame_adds_the_columns_lazily(client, model):
    import pandas as pd

    texts = ["LINEのIDを送るのでそちらで話しましょう", None, "", "納品しました", "他の人はもう仕事を始めている。", 42]
    pdf = pd.DataFrame({"body": pd.Series(texts, dtype=object), "n": range(len(texts))})
    scored = score_frame(dd.from_pandas(pdf, npartitions=2), text_field="body")
    assert isinstance(scored, dd.DataFrame)
    assert list(scored.columns) == ["body", "n", *LABELS, "flagged", "evidence", "error"]
    out = _within(DEADLINE, scored.compute)
    assert list(out["n"]) == list(range(len(texts)))
    expected = model.score([texts[0], "", texts[3], texts[4]])
    for i, e in zip([0, 2, 3, 4], expected):
        row = out.iloc[i]
        assert [row[label] for label in LABELS] == [e[label] for label in LABELS]
        assert row["flagged"] == ",".join(e["flagged"])
        assert json.loads(row["evidence"]) == e["evidence"]
    assert out.iloc[0]["flagged"] == "off_platform"
    assert pd.isna(out.iloc[0]["error"]) and out.iloc[2]["error"] == "'body' is empty"
    # Dask reads an object column of texts as strings: None is missing, 42 is "42".
    assert out.iloc[1]["error"] == "'body' is null" and pd.isna(out.iloc[1]["off_platform"]) and pd.isna(out.iloc[1]["flagged"])


def test_score_frame_carries_a_path_not_the_model():
    import cloudpickle
    import pandas as pd

    scored = score_frame(dd.from_pandas(pd.DataFrame({"text": ["a"] * 10}), npartitions=5))
    model_file = ROOT / "models" / "default" / "model.skops"
    assert len(cloudpickle.dumps(dict(scored.__dask_graph__()))) < model_file.stat().st_size / 20


def test_score_frame_needs_the_text_column():
    import pandas as pd

    with pytest.raises(KeyError, match=r"no 'text' column to score; the columns are \['body'\]"):
        score_frame(dd.from_pandas(pd.DataFrame({"body": ["a"]}), npartitions=1))


@pytest.mark.parametrize("args, message", [
    (["score", "--dask", "-o", "{tmp}/out"], "--dask needs input files"),
    (["score", "-", "--dask", "-o", "{tmp}/out"], "--dask reads files, not standard input"),
    (["score", "{tmp}/*.nothing", "--dask", "-o", "{tmp}/out"], "input {tmp}/*.nothing: no files match"),
    (["score", "{tmp}/missing.jsonl", "--dask", "-o", "{tmp}/out"], "input {tmp}/missing.jsonl: no such file"),
    (["score", "s3://bucket/log.jsonl", "--dask", "-o", "{tmp}/out"], "input s3://bucket/log.jsonl: Install s3fs"),
    (["score", "{tmp}/log.jsonl", "--dask"], "--dask writes a folder of files: give it with -o FOLDER"),
    (["score", "{tmp}/log.jsonl", "--dask", "-o", "{tmp}/log.jsonl"], "is a file; --dask writes a folder"),
    (["score", "{tmp}/log.jsonl", "--dask", "-o", "{tmp}"], "the folder is not empty"),
    (["score", "{tmp}/log.jsonl", "--dask", "--jobs", "2", "-o", "{tmp}/out"], "--jobs is for local scoring"),
    (["score", "{tmp}/log.jsonl", "--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --dask"),
], ids=["no-inputs", "stdin", "no-match", "missing", "s3-without-s3fs", "no-output", "output-is-a-file",
        "output-not-empty", "jobs", "scheduler-without-dask"])
def test_unusable_dask_invocations_fail_clearly(args, message, tmp_path, capsys):
    if "s3fs" in message and _installed("s3fs"):
        pytest.skip("s3fs is installed")
    (tmp_path / "log.jsonl").write_bytes(_jsonl_bytes(_messages(1, "m")))
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _installed(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_importing_the_package_does_not_import_dask_pandas_or_sklearn(tmp_path):
    # (Loading a model imports scikit-learn and skops, and skops imports dask where it is installed.)
    code = ("import sys, classifier, classifier.batch, classifier.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'pandas', 'sklearn', 'flask')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=DEADLINE, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "[]"


def test_without_dask_the_error_names_the_extra(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(_jsonl_bytes(_messages(1, "m")))
    code = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None\n"
            "try:\n    import classifier.dask\nexcept ImportError as e:\n    print(e)\n"
            "from classifier.cli import main\n"
            f"sys.exit(main(['score', {str(log)!r}, '--dask', '-o', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=DEADLINE, cwd=ROOT)
    assert proc.returncode == 2
    assert "install it with `pip install -e '.[dask]'`" in proc.stdout.decode()
    assert "error: classifier.dask needs Dask" in proc.stderr.decode() and "pip install -e '.[dask]'" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


def test_one_file_split_into_blocks_gives_exactly_the_local_rows(client, tmp_path):
    # Bad lines, blank lines and lines without an id (numbered by line) all through the
    # file, a BOM at its start, no newline at its end: every block numbers its lines as
    # the whole file does, and the blocks in name order are the local output.
    lines = []
    for i in range(60):
        lines.append(MIXED_JSONL[i % 12] if i % 5 == 0 else json.dumps(_messages(i + 1, "s")[i], ensure_ascii=False).encode())
        if i % 7 == 0:
            lines.append(json.dumps({"text": TEXTS[i % len(TEXTS)]}, ensure_ascii=False).encode())
    log = tmp_path / "big.jsonl"
    log.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines))
    local = _local([str(log)], tmp_path / "local.jsonl")
    result = _within(DEADLINE, score_logs, [str(log)], str(tmp_path / "out"), client=client, blocksize=600)
    parts = _partitions(tmp_path / "out")
    n = len(parts)
    assert n >= 5 and [p.name for p in parts] == [f"{k:05d}-big-{k + 1}of{n}.jsonl" for k in range(n)]
    assert b"".join(p.read_bytes() for p in parts) == local
    rows = read_jsonl(local.decode())
    assert len({r["id"] for r in rows}) == len(rows)  # line-numbered ids did not restart in a block
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary["rows_read"] == len(rows) and result["failed"] == []
    assert summary["rows_with_errors"] == sum("error" in r for r in rows) > 0
    assert summary["blank_lines_skipped"] == sum(1 for line in lines if not line.strip())
    for label in LABELS:
        assert summary["flagged"][label] == sum(label in r.get("flagged", ()) for r in rows)
    # Each block starts at a line of its own.
    assert len({p["first_line"] for p in summary["partitions"]}) == n


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_by_default_a_file_is_cut_into_a_multiple_of_the_workers(tmp_path, workers):
    from dask.utils import parse_bytes

    from classifier.dask import BLOCKSIZE, _blocks, _expand, block_size

    line = json.dumps({"text": "x" * 200}).encode() + b"\n"
    log = tmp_path / "big.jsonl"
    log.write_bytes(line * (parse_bytes("6.5MiB") // len(line)))
    [(name, source)] = _expand([str(log)])
    assert len(_blocks(name, source, None, None, workers)) % workers == 0
    assert len(_blocks(name, source, "1MiB", None, workers)) == log.stat().st_size // parse_bytes("1MiB")
    largest = parse_bytes(BLOCKSIZE)
    for size in range(2 * largest, 10**10, 7_777_777):
        blocks = size // block_size(size, None, workers)
        assert blocks % workers == 0 and size // largest <= blocks < size // largest + workers
    assert block_size(1000, None, workers) == largest  # small: one block


def test_a_gzip_or_small_file_stays_one_block(client, tmp_path):
    log = tmp_path / "big.jsonl.gz"
    log.write_bytes(gzip.compress(_jsonl_bytes(_messages(40, "z"))))
    local = _local([str(log)], tmp_path / "local.jsonl")
    _within(DEADLINE, score_logs, [str(log)], str(tmp_path / "out"), client=client, blocksize=100)
    [part] = _partitions(tmp_path / "out")
    assert part.name == "00000-big.jsonl" and part.read_bytes() == local
