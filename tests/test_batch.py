import csv
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from classifier import LABELS
from classifier.cli import main
from conftest import ROOT, read_jsonl

GOOD = {"id": "m1", "text": "LINEのIDを送るのでそちらで話しましょう", "sender": "client"}

# One of each kind of bad line, between good ones: (raw line bytes, expected error substring or None).
MIXED = [
    (json.dumps(GOOD, ensure_ascii=False).encode(), None),
    (b"{not json", "not JSON"),
    (b'["a", "list"]', "expected an object"),
    (b'{"id": "m3"}', "no 'text' field"),
    (b'{"id": "m4", "text": null}', "'text' is null"),
    (b'{"id": "m5", "text": 42}', "'text' is a int"),
    (b'{"id": "m6", "text": ["a"]}', "'text' is a list"),
    (b'{"id": "m7", "text": NaN}', "'text' is NaN"),
    (b'{"id": "m8", "text": ""}', "'text' is empty"),
    (b'{"id": "m9", "text": "\xff\xfe bad bytes"}', "not valid UTF-8"),
    (b'{"id": "m10", "text": "\xe6\x98\x8e\xe6\x97\xa5\xe3\x81\xbe\xe3\x81\xa7\\u2028\xe3\x81\xa7\xe3\x81\x99\r"}', None),
    ('{"id": "m11", "text": "一行目\u2028二行目\rまだ同じ行"}'.encode(), None),
    (b"", "blank"),
    (json.dumps({"id": "m12", "text": "あ" * 5_000_000}).encode(), "characters; scored on its head and tail"),
    (json.dumps({"text": "ありがとうございました", "extra": {"k": 1}}, ensure_ascii=False).encode(), None),
]


def _mixed_log(path):
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(line for line, _ in MIXED) + b"\r\n")
    return path


def _run(*args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "classifier", *map(str, args)], input=stdin,
                          capture_output=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def mixed_output(tmp_path_factory):
    log = _mixed_log(tmp_path_factory.mktemp("mixed") / "log.jsonl")
    proc = _run("score", log)
    assert proc.returncode == 1, proc.stderr.decode()  # rows with errors
    return proc


def test_one_row_per_input_row_in_order(mixed_output):
    rows = read_jsonl(mixed_output.stdout.decode())
    expected = [e for line, e in MIXED if e != "blank"]
    assert len(rows) == len(expected)
    for row, error in zip(rows, expected):
        if error is None:
            assert "error" not in row and all(k in row for k in LABELS)
        else:
            assert error in row["error"]
    assert [r["id"] for r in rows][:2] == ["m1", 2]  # the id field, else the line number


def test_bad_rows_with_a_text_are_still_scored(mixed_output):
    rows = {r["id"]: r for r in read_jsonl(mixed_output.stdout.decode())}
    assert "off_platform" in rows["m8"] and "off_platform" in rows["m12"]
    assert "off_platform" not in rows["m3"]


def test_other_fields_pass_through(mixed_output):
    rows = read_jsonl(mixed_output.stdout.decode())
    assert rows[0]["sender"] == "client" and rows[0]["text"] == GOOD["text"]
    assert rows[-1]["extra"] == {"k": 1}


def test_summary_counts_add_up(mixed_output):
    summary = mixed_output.stderr.decode()
    rows = len([e for _, e in MIXED if e != "blank"])
    errors = len([e for _, e in MIXED if e not in (None, "blank")])
    assert f"rows read {rows}, scored {rows - errors}, with errors {errors}" in summary
    assert "blank lines skipped 1" in summary and "messages/s" in summary
    assert "Traceback" not in summary


def test_jobs_2_gives_the_same_rows(tmp_path, mixed_output):
    log = _mixed_log(tmp_path / "log.jsonl")
    proc = _run("score", log, "--jobs", "2")
    assert proc.returncode == 1
    assert read_jsonl(proc.stdout.decode()) == read_jsonl(mixed_output.stdout.decode())


def test_stdin_gzip_and_only_flagged(tmp_path):
    rows = [GOOD, {"id": "n", "text": "納品しました"}]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    gz = tmp_path / "log.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    from_stdin = read_jsonl(_run("score", "-", stdin=data).stdout.decode())
    from_gz = read_jsonl(_run("score", gz).stdout.decode())
    assert from_stdin == from_gz and len(from_gz) == 2
    flagged = read_jsonl(_run("score", gz, "--only-flagged").stdout.decode())
    assert [r["id"] for r in flagged] == ["m1"]


def test_truncated_gzip_is_reported(tmp_path):
    data = "".join(json.dumps({"id": i, "text": f"メッセージ{i}"}, ensure_ascii=False) + "\n" for i in range(2000)).encode()
    gz = gzip.compress(data)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gz[: len(gz) // 2])
    proc = _run("score", path)
    assert proc.returncode == 1
    rows = read_jsonl(proc.stdout.decode())
    assert "ends early or is corrupt" in rows[-1]["error"]
    assert all("error" not in r for r in rows[:-1]) and len(rows) > 1


def test_csv_in_and_out(tmp_path):
    path = tmp_path / "log.csv"
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "sender"])
        w.writerow(["c1", "一行目\n二行目、LINEはこちら taro_0000", "client"])
        w.writerow(["c2", "あ" * 140_000, "client"])
        w.writerow(["c3", "納品しました", "worker"])
    proc = _run("score", path, "--format", "csv")
    assert proc.returncode == 1, proc.stderr.decode()  # c2 is scored on its head and tail, and says so
    out = list(csv.DictReader(io.StringIO(proc.stdout.decode("utf-8-sig"))))
    assert [r["id"] for r in out] == ["c1", "c2", "c3"]
    assert out[0]["sender"] == "client" and float(out[0]["off_platform"]) >= 0
    assert "head and tail" in out[1]["error"]


def test_csv_without_the_text_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("id,body\n1,こんにちは\n", encoding="utf-8")
    rows = read_jsonl(_run("score", path).stdout.decode())
    assert rows[0]["error"] == "no 'text' field"
    rows = read_jsonl(_run("score", path, "--text-field", "body").stdout.decode())
    assert "error" not in rows[0]


def test_empty_file_gives_empty_output(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    proc = _run("score", path)
    assert proc.returncode == 0 and proc.stdout == b""


@pytest.mark.parametrize("args, message", [
    (["score", "does-not-exist.jsonl"], "no such file"),
    (["score", "-o", "/nonexistent-dir/out.jsonl"], "output /nonexistent-dir/out.jsonl"),
    (["score", "--jobs", "0"], "--jobs must be at least 1"),
    (["score", "--model", "/nonexistent-model"], "not a model directory"),
])
def test_unusable_invocations_fail_clearly(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err


def test_unknown_option_exits_2():
    proc = _run("score", "--frobnicate")
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_whole_lines(tmp_path, sig):
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(200_000):
            f.write(json.dumps({"id": i, "text": "LINEで連絡ください。よろしくお願いします。"}, ensure_ascii=False) + "\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "classifier", "score", str(path), "-o", str(out)], cwd=ROOT,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    # The output is written beside its final name until the run ends.
    def written():
        return sum(p.stat().st_size for p in tmp_path.glob(".out.jsonl.tmp-*"))

    while written() < 10_000 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"interrupted by" in err and b"rows read" in err and b"Traceback" not in err
    assert not out.exists() and b"out.jsonl.partial" in err  # an interrupted run does not look finished
    text = (tmp_path / "out.jsonl.partial").read_text(encoding="utf-8")
    assert text.endswith("\n")
    rows = read_jsonl(text)
    assert 0 < len(rows) < 200_000 and [r["id"] for r in rows] == list(range(len(rows)))


def test_a_dying_worker_is_reported_not_hung(tmp_path, monkeypatch):
    from classifier import batch

    rows = [batch.Row(i + 1, {"id": i, "text": "KILL" if i == 300 else "こんにちは"}) for i in range(600)]
    out = io.StringIO()
    summary = batch.Summary()
    monkeypatch.setattr(batch, "_score_in_worker", _die_on_kill)
    batch.run_batch(iter(rows), batch.Writer(out), summary, jobs=2, chunk_size=100)
    result = read_jsonl(out.getvalue())
    assert [r["id"] for r in result] == list(range(600))
    died = [r["id"] for r in result if "died" in r.get("error", "")]
    assert 300 in died and len(died) == 100
    assert summary.read == summary.scored + summary.errors == 600


def _die_on_kill(rows, text_field, id_field):
    from classifier import batch

    if any(r.record["text"] == "KILL" for r in rows):
        os._exit(1)
    return batch.score_rows(batch._worker_model, rows, text_field=text_field, id_field=id_field)
