"""Benchmark: batch scoring against bare MeCab, on one large log.

    python bench/bench_batch.py                  # 50,000 messages cycled from the written corpus
    python bench/bench_batch.py --rows 20000 --repeat 1

The log cycles the texts of ``data/train/written_*.jsonl`` and
``data/test.jsonl`` (each row with its own id and a sender) into a temporary
JSONL file. On those same messages it measures:

* bare fugashi tokenisation: ``[w.surface for w in tagger(text)]`` over all
  texts, the floor any scoring has to stand on;
* ``model.predict_proba`` in batches of ``--batch`` texts;
* ``python -m classifier score LOG -o OUT --jobs 1``, and ``--jobs 2``:
  the real command, from start to exit (Python's start, imports and the
  model's load and canary check included).

Every step runs in a fresh process, so that each peak memory is its own:
the peak resident set of that process (``ru_maxrss`` from ``os.wait4``); for
``--jobs 2`` the peak of the summed resident sets of the command and its
workers, sampled every 20 ms with psutil (pages the workers share with their
parent count once per process). The in-process steps time their loop only,
after imports and loading. CPU is user + system seconds of the process and
the children it reaped. Each figure is the best of ``--repeat`` rounds, the
steps interleaved, as other load on the machine only ever slows a step down.
The two commands' outputs are checked to be byte-for-byte the same.

The table goes to standard output and to ``--results`` (bench/results.md).
"""

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(glob.glob(str(ROOT / "data" / "train" / "written_*.jsonl"))) + [str(ROOT / "data" / "test.jsonl")]


def corpus_rows():
    """(text, sender) of every written and test message, in file order."""
    rows = []
    for path in SOURCES:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    rows.append((record["text"], record.get("sender") or "client"))
    return rows


def make_log(path, n):
    """``n`` messages cycled from the corpus, each with its own id and its sender."""
    rows = corpus_rows()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text, sender = rows[i % len(rows)]
            f.write(json.dumps({"id": f"bench-{i}", "sender": sender, "text": text}, ensure_ascii=False) + "\n")


def read_texts(log):
    with open(log, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


# --- the in-process steps, each run in a child of its own --------------------

def step_bare(texts, args):
    import fugashi

    tagger = fugashi.Tagger()
    start, cpu = time.perf_counter(), time.process_time()
    for text in texts:
        [w.surface for w in tagger(text)]
    return time.perf_counter() - start, time.process_time() - cpu


def step_proba(texts, args):
    import classifier

    model = classifier.load(args.model)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), args.batch):
        model.predict_proba(texts[i : i + args.batch])
    return time.perf_counter() - start, time.process_time() - cpu


STEPS = {"bare": step_bare, "proba": step_proba}


def child_main(args):
    texts = read_texts(args.log)
    seconds, cpu = STEPS[args.step](texts, args)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rows": len(texts)}))
    return 0


# --- the parent ---------------------------------------------------------------

def _tree_rss(pid):
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0


def run(cmd, sample_tree=False):
    """Run ``cmd``; its wall seconds, rusage, stdout and stderr, and the peak summed RSS of its tree."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    # The code of this checkout, whatever is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_tree:
        sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    if sample_tree:
        sampler.join()
    out.seek(0), err.seek(0)
    stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{stderr}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "maxrss": usage.ru_maxrss * 1024,
            "tree_rss": peak[0], "stdout": stdout, "stderr": stderr}


def in_process(step, log, args):
    cmd = [sys.executable, __file__, "--child", step, "--log", log, "--batch", str(args.batch)]
    if args.model:
        cmd += ["--model", args.model]
    r = run(cmd)
    inner = json.loads(r["stdout"].strip().splitlines()[-1])
    return {"seconds": inner["seconds"], "cpu": inner["cpu"], "memory": r["maxrss"], "rate": None}


def command(log, out, jobs, args):
    cmd = [sys.executable, "-m", "classifier", "score", log, "-o", out, "--jobs", str(jobs)]
    if args.model:
        cmd += ["--model", args.model]
    r = run(cmd, sample_tree=jobs > 1)
    rate = re.findall(r"([\d.]+) messages/s", r["stderr"])
    return {"seconds": r["seconds"], "cpu": r["cpu"], "memory": r["tree_rss"] if jobs > 1 else r["maxrss"],
            "rate": float(rate[-1]) if rate else None}


def table(results, rows, batch):
    """The Markdown table: one row per step."""
    bare = rows / results["bare"]["seconds"]
    lines = ["| step | messages/s | × bare tokenisation | CPU s | peak memory |", "|---|---:|---:|---:|---:|"]
    names = {
        "bare": "bare fugashi tokenisation (`[w.surface for w in tagger(text)]`)",
        "proba": f"`model.predict_proba`, batches of {batch}",
        "jobs1": "`score --jobs 1`, start to exit",
        "jobs2": "`score --jobs 2`, start to exit",
    }
    for key, r in results.items():
        rate = rows / r["seconds"]
        name = names[key]
        if r["rate"] is not None:
            name += f" (after start-up: {r['rate']:,.0f}/s)"
        lines.append(f"| {name} | {rate:,.0f} | {rate / bare:.2f} | {r['cpu']:.1f} | {r['memory'] / 2**20:,.0f} MB |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="messages in the log (default 50,000)")
    parser.add_argument("--log", help="score this JSONL log instead of making one")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is the best round's")
    parser.add_argument("--batch", type=int, default=256, help="texts per predict_proba call (the command's chunk)")
    parser.add_argument("--model", help="model directory (default: the shipped one)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results.md"), help="Markdown file to write")
    parser.add_argument("--child", choices=sorted(STEPS), dest="step", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return child_main(args)

    with tempfile.TemporaryDirectory(prefix="bench_batch.") as tmp:
        log = args.log or os.path.join(tmp, "log.jsonl")
        if not args.log:
            make_log(log, args.rows)
        rows = len(read_texts(log))
        load_before = os.getloadavg()[0]
        rounds = {"bare": [], "proba": [], "jobs1": [], "jobs2": []}
        for r in range(args.repeat):
            rounds["bare"].append(in_process("bare", log, args))
            rounds["proba"].append(in_process("proba", log, args))
            outs = [os.path.join(tmp, f"jobs{j}.jsonl") for j in (1, 2)]
            rounds["jobs1"].append(command(log, outs[0], 1, args))
            rounds["jobs2"].append(command(log, outs[1], 2, args))
            if Path(outs[0]).read_bytes() != Path(outs[1]).read_bytes():
                sys.exit("--jobs 1 and --jobs 2 wrote different outputs")
            print(f"round {r + 1}/{args.repeat}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in rounds.items()),
                  file=sys.stderr)
        results = {k: min(v, key=lambda x: x["seconds"]) for k, v in rounds.items()}

    speedup = results["jobs1"]["seconds"] / results["jobs2"]["seconds"]
    inner = results["jobs2"]["rate"] / results["jobs1"]["rate"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "classifier"], capture_output=True, text=True, cwd=ROOT).stdout
    header = (
        f"{rows:,} messages cycled from the written corpus and the test split; best of {args.repeat} rounds; "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; Python {platform.python_version()}; commit {commit}"
        f"{' with uncommitted changes to classifier/' if dirty else ''}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    body = (
        f"{header}\n\n{table(results, rows, args.batch)}\n\n`--jobs 2` is {speedup:.2f}× as fast as `--jobs 1` "
        f"({inner:.2f}× after start-up). "
        "Peak memory: the step's own process (`ru_maxrss`); for `--jobs 2` the summed resident sets of the "
        "command and its two workers (sampled every 20 ms). The commands' figures include starting Python and "
        "loading the model; in brackets, the rate the command reports itself, from after the model is loaded.\n\n"
        f"Rerun: `python bench/bench_batch.py --rows {args.rows} --repeat {args.repeat}`\n"
    )
    print(body)
    Path(args.results).write_text("# Batch scoring benchmark\n\n" + body, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
