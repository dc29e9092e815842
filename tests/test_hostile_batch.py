"""Batch scoring under hostile input and faults (issue 16): nothing lost, nothing silently wrong.

Each test reproduces one failure of the issue's list and checks the fix. The
tests use a tiny model trained once per session, so they do not depend on
the shipped one.
"""

import csv
import errno
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
from conftest import ROOT, read_jsonl, write_jsonl

from test_train import FOREIGN  # noqa: E402  (the small labelled set written for the tests)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A model directory trained in seconds on the small labelled set of test_train.py."""
    from classifier.training import train

    d = tmp_path_factory.mktemp("tiny")
    data = write_jsonl(d / "labels.jsonl", [{"id": f"f{i}", "text": t, "off_platform": op, "peer_pressure": pp}
                                            for i, (t, op, pp) in enumerate(FOREIGN)])
    train([data], d / "model", grid={"clf__C": [4.0], "features__char_ngram_range": [(1, 3)],
                                     "clf__class_weight": ["balanced"]}, folds=2, progress=False)
    return str(d / "model")


def _score(tiny, *args):
    return main(["score", *map(str, args), "--model", tiny])


def _run(tiny, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "classifier", *map(str, args), "--model", tiny],
                          capture_output=True, timeout=timeout, cwd=ROOT)


def _strict_json(line):
    """Parse as JSON is specified: no NaN or Infinity."""
    def refuse(name):
        raise ValueError(f"bare {name} in the output")

    return json.loads(line, parse_constant=refuse)


def _messages(n):
    return [{"id": i, "text": f"納品物を確認しました{i}"} for i in range(n)]


# --- 1. an output that is an input ------------------------------------------


@pytest.mark.parametrize("command", ["score", "review"])
@pytest.mark.parametrize("alias", ["same", "hardlink", "symlink", "gz"])
def test_an_output_that_is_an_input_is_refused(tiny, tmp_path, capsys, command, alias):
    log = tmp_path / ("log.jsonl.gz" if alias == "gz" else "log.jsonl")
    data = "".join(json.dumps({**m, "request_id": "r1"}, ensure_ascii=False) + "\n" for m in _messages(5)).encode()
    log.write_bytes(gzip.compress(data) if alias == "gz" else data)
    before = log.read_bytes()
    out = log
    if alias == "hardlink":
        out = tmp_path / "other.jsonl"
        os.link(log, out)
    elif alias == "symlink":
        out = tmp_path / "other.jsonl"
        out.symlink_to(log)
    assert main([command, str(log), "-o", str(out), "--model", tiny]) == 2
    err = capsys.readouterr().err
    assert f"output {out} is the input {log}" in err and "Traceback" not in err
    assert log.read_bytes() == before
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*tmp*"))


# --- 2. atomic outputs --------------------------------------------------------


def test_a_failed_run_keeps_the_previous_output_and_a_partial(tiny, tmp_path, capsys, monkeypatch):
    from classifier import batch

    log = write_jsonl(tmp_path / "log.jsonl", _messages(600))
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    real_write, calls = batch.Writer.write, []

    def full_disk(self, records):
        calls.append(len(records))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, records)

    monkeypatch.setattr(batch.Writer, "write", full_disk)
    assert _score(tiny, log, "-o", out) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"{out}.partial" in err
    assert "rows read 512" in err  # the summary says how far it got
    assert out.read_text(encoding="utf-8") == "previous\n"
    partial = (tmp_path / "out.jsonl.partial").read_text(encoding="utf-8")
    assert partial.endswith("\n") and [r["id"] for r in read_jsonl(partial)] == list(range(calls[0]))
    assert not list(tmp_path.glob(".out.jsonl.tmp-*"))


def test_a_finished_run_replaces_the_output_whole(tiny, tmp_path, capsys):
    log = write_jsonl(tmp_path / "log.jsonl", _messages(300))
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    assert _score(tiny, log, "-o", out) == 0
    assert [r["id"] for r in read_jsonl(out)] == list(range(300))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "out.jsonl"]


def test_an_unwritable_output_fails_before_any_work(tiny, tmp_path, capsys):
    log = write_jsonl(tmp_path / "log.jsonl", _messages(3))
    assert _score(tiny, log, "-o", tmp_path / "missing" / "out.jsonl") == 2
    assert f"output {tmp_path / 'missing' / 'out.jsonl'}: no such directory" in capsys.readouterr().err


def test_standard_output_still_streams(tiny, tmp_path):
    log = write_jsonl(tmp_path / "log.jsonl", _messages(3))
    proc = _run(tiny, "score", log, "-o", "-")
    assert proc.returncode == 0 and [r["id"] for r in read_jsonl(proc.stdout.decode())] == [0, 1, 2]


# --- 3. lone surrogates ---------------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_lone_surrogate_is_scored_and_written_as_valid_json(tiny, tmp_path, jobs):
    lines = [json.dumps(m, ensure_ascii=False) for m in _messages(310)]
    lines[255] = r'{"id": 255, "text": "\ud800", "note\udfff": "x\udc80y"}'
    lines[300] = r'{"id": 300, "text": "LINE\ud800で連絡ください"}'
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = _run(tiny, "score", log, "-o", out, "--jobs", jobs)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"rows read 310, scored 310, with errors 0" in proc.stderr
    rows = read_jsonl(out.read_bytes().decode("utf-8"))  # strict UTF-8
    assert [r["id"] for r in rows] == list(range(310))
    assert rows[255]["text"] == "\ud800" and rows[255]["note\udfff"] == "x\udc80y"  # round-trips
    assert all(label in rows[300] for label in LABELS)


def test_a_raw_encoded_surrogate_is_an_error_row(tiny, tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"id": 1, "text": "a\xed\xa0\x80b"}\n{"id": 2, "text": "ok"}\n')  # UTF-8 has no surrogates
    assert _score(tiny, log) == 1
    rows = read_jsonl(capsys.readouterr().out)
    assert "line 1 is not valid UTF-8" in rows[0]["error"] and "error" not in rows[1]


def test_a_lone_surrogate_in_csv_output_becomes_a_replacement_character(tiny, tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text('{"id": "s", "text": "a\\ud800b"}\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    assert _score(tiny, log, "-o", out) == 0
    [row] = csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig")))
    assert row["text"] == "a\ufffdb"


def test_normalisation_drops_lone_surrogates():
    from classifier.normalize import normalize

    assert normalize("\ud800").text == "" and normalize("a\udfffb").text == "ab"


# --- 4. deep nesting --------------------------------------------------------------


def test_deeply_nested_json_is_an_error_row(tiny, tmp_path, capsys):
    deep = "[" * 1000 + "]" * 1000
    lines = [json.dumps(m, ensure_ascii=False) for m in _messages(4)]
    lines[1] = '{"id": 1, "text": ' + deep + "}"
    lines[2] = "[" * 100_000
    lines.append(json.dumps({"id": 4, "text": "括弧" + "[" * 500 + "{" * 500}, ensure_ascii=False))  # in a string: text
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _score(tiny, log) == 1
    captured = capsys.readouterr()
    rows = read_jsonl(captured.out)
    assert [r["id"] for r in rows] == [0, 2, 3, 3, 4]  # an error row's id is its line number
    assert rows[1]["error"] == "line 2 is JSON nested more than 100 levels deep"
    assert rows[2]["error"] == "line 3 is JSON nested more than 100 levels deep"
    assert "error" not in rows[0] and "error" not in rows[3] and "error" not in rows[4]
    assert "Traceback" not in captured.err


def test_review_survives_deep_nesting_and_surrogates(tiny, tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text('{"request_id": "r1", "text": "' + r"\ud800" + '"}\n'
                   + '{"request_id": "r1", "text": ' + "[" * 5000 + "]" * 5000 + "}\n"
                   + '{"request_id": "r2", "text": "納品しました"}\n', encoding="utf-8")
    assert main(["review", str(log), "--model", tiny]) == 1
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["request_id"] for r in out] == ["r1", "r2", None]
    assert "nested more than 100 levels" in out[-1]["errors"][0]["error"]
    assert "rows with errors 1" in captured.err


# --- 5. CSV parsing errors ----------------------------------------------------------


def test_an_unclosed_csv_quote_is_reported_and_reading_resumes(tiny, tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text('id,text\nc1,"unclosed quote\nc2,二行目\nc3,三行目\n', encoding="utf-8")
    assert _score(tiny, path) == 1
    captured = capsys.readouterr()
    rows = read_jsonl(captured.out)
    assert [r["id"] for r in rows] == [2, "c2", "c3"]
    assert "lines 2-4" in rows[0]["error"] and "not closed" in rows[0]["error"] and "resumes at line 3" in rows[0]["error"]
    assert rows[1]["text"] == "二行目" and "error" not in rows[1]
    assert "rows read 3, scored 2, with errors 1" in captured.err


def test_a_quote_closed_late_does_not_swallow_rows(tiny, tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text('id,text\nc1,"open\nc2,plain\nc3,"closed, here"\nc4,"ok\nstill c4"\n', encoding="utf-8")
    assert _score(tiny, path) == 1
    rows = read_jsonl(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [2, "c2", "c3", "c4"]
    assert "CSV error" in rows[0]["error"] and rows[2]["text"] == "closed, here" and rows[3]["text"] == "ok\nstill c4"


def test_a_runaway_quote_is_cut_off(tiny, tmp_path, capsys, monkeypatch):
    from classifier import batch

    monkeypatch.setattr(batch, "MAX_RECORD_LINES", 5)
    path = tmp_path / "log.csv"
    path.write_text('id,text\nc0,"never closed\n' + "".join(f"c{i},行{i}\n" for i in range(1, 10))
                    + 'c10,"closed after all"\n', encoding="utf-8")
    assert _score(tiny, path) == 1
    rows = read_jsonl(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [2] + [f"c{i}" for i in range(1, 11)]
    assert "still open after 5 lines" in rows[0]["error"]


@pytest.mark.parametrize("command", ["score", "review"])
def test_a_duplicated_csv_column_is_an_unusable_input(tiny, tmp_path, capsys, command):
    path = tmp_path / "log.csv"
    path.write_text("request_id,text,sender,text\nr1,一,client,二\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main([command, str(path), "-o", str(out), "--model", tiny]) == 2
    assert "names column 'text' more than once" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [path]


def test_a_duplicated_column_on_standard_input_leaves_no_output(tiny, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "classifier", "score", "-", "--input-format", "csv", "-o", str(out),
                           "--model", tiny], input="id,id,text\n1,2,x\n".encode(), capture_output=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2 and b"names column 'id' more than once" in proc.stderr
    assert not out.exists() and b"Traceback" not in proc.stderr


# --- 6. exit status -----------------------------------------------------------------


def test_exit_status_counts_failed_rows(tiny, tmp_path, capsys):
    log = write_jsonl(tmp_path / "log.jsonl", _messages(4) + [{"id": "bad"}])
    assert _score(tiny, log) == 1
    err = capsys.readouterr().err
    assert "with errors 1" in err and "exit status 1" in err
    assert _score(tiny, log, "--allow-errors") == 0
    assert _score(tiny, log, "--max-errors", "1") == 0
    assert _score(tiny, log, "--max-errors", "0") == 1
    assert _score(tiny, log, "--text-field", "body") == 1  # every row failed
    assert "with errors 5" in capsys.readouterr().err
    assert _score(tiny, log, "--max-errors", "-1") == 2


def test_exit_status_of_review(tiny, tmp_path, capsys):
    log = write_jsonl(tmp_path / "log.jsonl", [{"request_id": "r1", "text": "納品しました"}])
    assert main(["review", str(log), "--model", tiny]) == 0
    write_jsonl(log, [{"request_id": "r1", "text": "納品しました"}, {"request_id": "r1", "text": 7}])
    assert main(["review", str(log), "--model", tiny]) == 1
    assert main(["review", str(log), "--model", tiny, "--allow-errors"]) == 0
    assert "rows with errors 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "review"])
def test_help_documents_the_exit_status(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out and "--allow-errors" in out and "--max-errors" in out and "--no-csv-escape" in out


# --- 7. encodings ------------------------------------------------------------------


def test_a_cp932_csv_is_detected_and_said_so(tiny, tmp_path, capsys):
    path = tmp_path / "excel.csv"
    rows = [("s1", "LINEのIDを教えてください"), ("s2", "ﾃｽﾄ、納品しました"), ("s3", "～①髙")]
    with open(path, "w", encoding="cp932", newline="") as f:
        csv.writer(f).writerows([("id", "text"), *rows])
    assert _score(tiny, path) == 0
    captured = capsys.readouterr()
    out = read_jsonl(captured.out)
    assert [(r["id"], r["text"]) for r in out] == rows
    assert f"encodings: {path} cp932 (not UTF-8)" in captured.err


def test_encoding_option(tiny, tmp_path, capsys):
    log = tmp_path / "sjis.jsonl"
    log.write_bytes('{"id": 1, "text": "連絡ください"}\n{"id": 2, "text": "\u00e9"}\n'.encode("cp932", errors="replace"))
    assert _score(tiny, log) == 1  # not UTF-8 without --encoding: error rows, no guess for JSONL
    assert "not valid UTF-8" in read_jsonl(capsys.readouterr().out)[0]["error"]
    assert _score(tiny, log, "--encoding", "cp932") == 0
    captured = capsys.readouterr()
    assert read_jsonl(captured.out)[0]["text"] == "連絡ください" and "encoding cp932" in captured.err
    assert _score(tiny, log, "--encoding", "klingon") == 2
    assert "--encoding klingon: unknown encoding" in capsys.readouterr().err
    assert _score(tiny, log, "--encoding", "utf-16") == 2
    assert "cannot be read as JSONL" in capsys.readouterr().err


def test_bytes_not_in_the_given_encoding_are_error_rows(tiny, tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_bytes("id,text\nc1,連絡\n".encode("cp932") + b"c2,\x82\n" + "c3,了解\n".encode("cp932"))
    assert _score(tiny, path, "--encoding", "cp932") == 1
    rows = read_jsonl(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["c1", 3, "c3"] and "not valid cp932 in 'text'" in rows[1]["error"]


# --- 8. output formats ------------------------------------------------------------


def test_output_format_follows_the_extension(tiny, tmp_path, capsys):
    log = write_jsonl(tmp_path / "log.jsonl", [{"id": "a", "text": "LINEで連絡", "request_id": "r1"}])
    for name in ("out.jsonl.gz", "out.csv", "out.csv.gz"):
        assert _score(tiny, log, "-o", tmp_path / name) == 0
    assert read_jsonl(gzip.decompress((tmp_path / "out.jsonl.gz").read_bytes()).decode())[0]["id"] == "a"
    plain = (tmp_path / "out.csv").read_bytes()
    assert plain.startswith(b"\xef\xbb\xbfid,off_platform,peer_pressure,flagged,error,")
    assert gzip.decompress((tmp_path / "out.csv.gz").read_bytes()) == plain
    assert main(["review", str(log), "-o", str(tmp_path / "r.csv"), "--model", tiny]) == 0
    [row] = csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text(encoding="utf-8-sig")))
    assert row["request_id"] == "r1" and row["decision"] in ("approve", "review", "deny")
    assert json.loads(row["reasons"])[0]["code"]


def test_csv_output_neutralises_formulas(tiny, tmp_path, capsys):
    cells = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tx", "plain"]
    log = write_jsonl(tmp_path / "log.jsonl", [{"id": c, "text": c, "n": -3} for c in cells])
    out = tmp_path / "out.csv"
    assert _score(tiny, log, "-o", out) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert [r["text"] for r in rows] == ["'" + c for c in cells[:5]] + ["plain"]
    assert [r["id"] for r in rows] == [r["text"] for r in rows]
    assert rows[0]["n"] == "-3"  # numbers are not formulas
    assert _score(tiny, log, "-o", out, "--no-csv-escape") == 0
    assert [r["text"] for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig")))] == cells


# --- 9. NaN and Infinity -------------------------------------------------------------


def test_nan_texts_are_error_rows_and_never_bare_nan(tiny, tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text('{"id": 1, "text": NaN}\n{"id": 2, "text": Infinity}\n{"id": NaN, "text": "ok", "w": -Infinity}\n'
                   '{"id": 4, "text": "fine", "nested": [1.5, NaN]}\n', encoding="utf-8")
    assert _score(tiny, log) == 1
    rows = [_strict_json(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["error"] == "'text' is NaN" and rows[0]["text"] is None
    assert rows[1]["error"] == "'text' is a float, expected a string"
    assert rows[2]["id"] is None and rows[2]["w"] is None and "error" not in rows[2]
    assert rows[3]["nested"] == [1.5, None]


# --- 10. workers die with their parent -------------------------------------------------


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parent_ends_the_workers(tiny, tmp_path):
    log = write_jsonl(tmp_path / "big.jsonl", _messages(200_000))
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "classifier", "score", str(log), "--jobs", "2", "-o", str(out),
                             "--model", tiny], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 120
        # Workers exist and rows are being written: the run is in full swing.
        while len(workers) < 2 or not any(p.stat().st_size > 10_000 for p in tmp_path.glob(".out.jsonl.tmp-*")):
            assert time.monotonic() < deadline and proc.poll() is None, "the run never got going"
            time.sleep(0.1)
            workers = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "workers outlived their parent"
        assert out.read_text(encoding="utf-8") == "previous\n"  # a killed run never replaces the output
    finally:
        proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
