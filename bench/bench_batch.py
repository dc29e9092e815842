"""Benchmark: scoring speed and memory against bare MeCab, on two message mixes, in one run.

    python bench/bench_batch.py                          # 50,000 messages per mix, best of 3 (about 10 min)
    python bench/bench_batch.py --rows 10000 --repeat 1  # a quick look (about 1 min)
    python bench/bench_batch.py --no-dask                # without the Dask run

Two logs of ``--rows`` JSONL messages each (every row with its own id and a
sender) are written to a temporary folder:

* **corpus**: the written messages of ``data/written/*.jsonl`` cycled in file
  order (about half of them solicitations, so about half are flagged);
* **log**: the real chat of ``data/real/*.jsonl`` cycled, with about 3 %
  solicitations (positives of ``data/written``) mixed in at random places:
  what a platform's log looks like.

On each mix, on the same messages, every step in a fresh process:

* bare fugashi tokenisation, ``[w.surface for w in tagger(text)]`` over all
  texts: the floor any scoring stands on, and the unit of every ratio;
* ``model.predict_proba`` in batches of ``--batch`` texts (the loop only);
* ``python -m classifier score LOG -o OUT`` with ``--jobs 1``, ``--jobs 1
  --no-evidence`` and ``--jobs 2``: the real command from start to exit
  (Python's start, imports, the model's load and canary check included),
  and the rate the command reports itself, counted from after the model is
  loaded ("after start-up").

Then, once: ``classifier.score(one string)`` latency (p50/p99 over
``--calls`` calls each, a ~90-character message that is flagged and one that
is not), ``import classifier`` (best of 5 fresh interpreters), and, unless
``--no-dask``, ``score --dask`` on the corpus log as **one** file on a
2-worker LocalCluster (see ``bench_dask.py``).

Peak memory: ``ru_maxrss`` of the step's process; for ``--jobs 2`` the peak of
the summed resident sets (RSS) of the command and its workers, and of their
summed proportional sets (PSS: a page shared by three processes counts a
third in each), sampled every 50 ms in a second run of its own (reading PSS
takes CPU the timed run would lose). CPU: user + system seconds of the
process and the children it reaped. Each figure is the best of ``--repeat``
rounds, the steps interleaved, as other load only ever slows a step down.
The commands' outputs are checked to be byte-for-byte the same across jobs.

The tables go to standard output and to ``--results`` (bench/results.md).
"""

import argparse
import glob
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: ~90 characters each, as the issue's single-message figure.
FLAGGED = ("はじめまして。記事作成のご依頼です。こちらのサイトだと手数料が高いので、詳細はLINEでお話しできればと思います。"
           "IDはmirai_0123です。よろしくお願いします。")
PLAIN = ("お世話になっております。先日ご依頼いただいた記事の初稿を納品いたしました。構成や表現でお気づきの点がございましたら、"
         "どんな細かいことでもお知らせください。")


def _rows(pattern):
    rows = []
    for path in sorted(glob.glob(str(ROOT / pattern))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def make_logs(folder, n, rate=0.03, seed=0):
    """The two mixes as JSONL files of ``n`` rows each: {mix: path}."""
    written = _rows("data/written/*.jsonl")
    real = _rows("data/real/*.jsonl")
    positives = [r for r in written if r.get("off_platform") or r.get("peer_pressure")]
    rng = random.Random(seed)
    mixes = {
        "corpus": [written[i % len(written)] for i in range(n)],
        "log": [],
    }
    k = 0
    for i in range(n):
        if rng.random() < rate:
            mixes["log"].append(positives[rng.randrange(len(positives))])
        else:
            mixes["log"].append(real[k % len(real)])
            k += 1
    paths = {}
    for mix, rows in mixes.items():
        paths[mix] = os.path.join(folder, f"{mix}.jsonl")
        with open(paths[mix], "w", encoding="utf-8") as f:
            for i, r in enumerate(rows):
                f.write(json.dumps({"id": f"{mix}-{i}", "sender": r.get("sender") or "client", "text": r["text"]},
                                   ensure_ascii=False) + "\n")
    return paths


def read_texts(log):
    with open(log, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


# --- the in-process steps, each run in a child of its own --------------------

def step_bare(args):
    import fugashi

    texts = read_texts(args.log)
    tagger = fugashi.Tagger()
    start, cpu = time.perf_counter(), time.process_time()
    for text in texts:
        [w.surface for w in tagger(text)]
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "rows": len(texts)}


def step_proba(args):
    import classifier

    texts = read_texts(args.log)
    model = classifier.load(args.model)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), args.batch):
        model.predict_proba(texts[i : i + args.batch])
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "rows": len(texts)}


def step_single(args):
    import classifier
    from classifier.model import default_model

    if args.model:
        os.environ["CLASSIFIER_MODEL"] = args.model
    default_model()
    out = {}
    for name, text in (("flagged", FLAGGED), ("plain", PLAIN)):
        result = classifier.score(text)
        assert bool(result["flagged"]) == (name == "flagged"), (name, result)
        for _ in range(100):
            classifier.score(text)
        times = []
        for _ in range(args.calls):
            start = time.perf_counter()
            classifier.score(text)
            times.append(time.perf_counter() - start)
        times.sort()
        out[name] = {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)], "chars": len(text)}
    return out


STEPS = {"bare": step_bare, "proba": step_proba, "single": step_single}


# --- the parent ---------------------------------------------------------------

def _tree_memory(pid):
    """(summed RSS, summed PSS) of process ``pid`` and its descendants."""
    import psutil

    rss = pss = 0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0, 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return rss, pss


def _env():
    # The code of this checkout, whatever is installed.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def run(cmd, sample_tree=False):
    """Run ``cmd``: wall seconds, rusage, stdout, stderr, the peak summed RSS and PSS of its tree."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=_env())
    peak, done = [0, 0], threading.Event()

    def sample():
        while not done.wait(0.05):
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

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
            "tree_rss": peak[0], "tree_pss": peak[1], "stdout": stdout, "stderr": stderr}


def in_process(step, args, log=None):
    cmd = [sys.executable, __file__, "--child", step, "--batch", str(args.batch), "--calls", str(args.calls)]
    if log:
        cmd += ["--log", log]
    if args.model:
        cmd += ["--model", args.model]
    r = run(cmd)
    inner = json.loads(r["stdout"].strip().splitlines()[-1])
    return {**inner, "memory": r["maxrss"], "pss": None, "rate": None}


def command(log, out, jobs, args, *extra, sample_tree=False):
    cmd = [sys.executable, "-m", "classifier", "score", log, "-o", out, "--jobs", str(jobs), *extra]
    if args.model:
        cmd += ["--model", args.model]
    r = run(cmd, sample_tree=sample_tree)
    rate = re.findall(r"([\d.]+) messages/s", r["stderr"])
    return {"seconds": r["seconds"], "cpu": r["cpu"], "memory": r["tree_rss"] if jobs > 1 else r["maxrss"],
            "pss": r["tree_pss"] if jobs > 1 else None, "rate": float(rate[-1]) if rate else None}


def import_time():
    code = "import time; t = time.perf_counter(); import classifier; print(time.perf_counter() - t)"
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                                    env=_env(), check=True).stdout) for _ in range(5))


NAMES = {
    "bare": "bare fugashi (`[w.surface for w in tagger(t)]`)",
    "proba": "`model.predict_proba`, batches of {batch}",
    "jobs1": "`score --jobs 1`",
    "jobs1_noev": "`score --jobs 1 --no-evidence`",
    "jobs2": "`score --jobs 2`",
}


def mix_table(results, rows, batch):
    bare = rows / results["bare"]["seconds"]
    lines = ["| step | msgs/s start to exit | × bare | msgs/s after start-up | × bare | CPU s | peak memory |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, r in results.items():
        rate = rows / r["seconds"]
        after = f"{r['rate']:,.0f} | {r['rate'] / bare:.2f}" if r["rate"] else "— | —"
        memory = f"{r['memory'] / 2**20:,.0f} MB"
        if r.get("pss"):
            memory += f" RSS, {r['pss'] / 2**20:,.0f} MB PSS"
        lines.append(f"| {NAMES[key].format(batch=batch)} | {rate:,.0f} | {rate / bare:.2f} | {after} | "
                     f"{r['cpu']:.1f} | {memory} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="messages per mix (default 50,000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is the best round's")
    parser.add_argument("--batch", type=int, default=256, help="texts per predict_proba call")
    parser.add_argument("--calls", type=int, default=2000, help="classifier.score calls per single-message figure")
    parser.add_argument("--mixes", default="corpus,log", help="which mixes (default corpus,log)")
    parser.add_argument("--no-dask", dest="dask", action="store_false", help="skip the Dask run")
    parser.add_argument("--model", help="model directory (default: the shipped one)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results.md"), help="Markdown file to write")
    parser.add_argument("--child", choices=sorted(STEPS), dest="step", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(STEPS[args.step](args)))
        return 0

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    mixes = args.mixes.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_batch.") as tmp:
        logs = make_logs(tmp, args.rows)
        rounds = {mix: {k: [] for k in NAMES} for mix in mixes}
        singles = []
        for r in range(args.repeat):
            for mix in mixes:
                log, got = logs[mix], rounds[mix]
                got["bare"].append(in_process("bare", args, log))
                got["proba"].append(in_process("proba", args, log))
                outs = {j: os.path.join(tmp, f"{mix}-jobs{j}.jsonl") for j in (1, 2)}
                got["jobs1"].append(command(log, outs[1], 1, args))
                got["jobs1_noev"].append(command(log, os.path.join(tmp, "noev.jsonl"), 1, args, "--no-evidence"))
                got["jobs2"].append(command(log, outs[2], 2, args))
                # Its memory in a run of its own: reading the processes' PSS (/proc/PID/smaps) every 50 ms takes
                # CPU from the scoring on two cores.
                sampled = command(log, os.path.join(tmp, "sampled.jsonl"), 2, args, sample_tree=True)
                got["jobs2"][-1].update(memory=sampled["memory"], pss=sampled["pss"])
                if Path(outs[1]).read_bytes() != Path(outs[2]).read_bytes():
                    sys.exit(f"{mix}: --jobs 1 and --jobs 2 wrote different outputs")
                print(f"round {r + 1}/{args.repeat} {mix}: "
                      + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in got.items()), file=sys.stderr)
            singles.append(in_process("single", args))
        results = {mix: {k: min(v, key=lambda x: x["seconds"]) for k, v in rounds[mix].items()} for mix in mixes}
        single = {name: {q: min(s[name][q] for s in singles) for q in ("p50", "p99")} for name in ("flagged", "plain")}
        imported = import_time()
        dask = None
        if args.dask:
            import bench_dask

            mix = mixes[0]
            dask = bench_dask.measure(logs[mix], os.path.join(tmp, f"{mix}-jobs1.jsonl"), os.path.join(tmp, "dask"),
                                      repeat=args.repeat, model=args.model, jobs1=results[mix]["jobs1"])
            dask["mix"] = mix

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "classifier"], capture_output=True, text=True, cwd=ROOT).stdout
    header = (
        f"{args.rows:,} messages per mix; best of {args.repeat} rounds; {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; Python {platform.python_version()}; commit {commit}"
        f"{' with uncommitted changes to classifier/' if dirty else ''}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; the run took {(time.perf_counter() - started) / 60:.1f} min."
    )
    parts = [header]
    titles = {"corpus": "Corpus mix (written messages cycled, about half flagged)",
              "log": "Realistic log (real chat with about 3 % solicitations)"}
    for mix in mixes:
        res = results[mix]
        speedup = res["jobs2"]["rate"] / res["jobs1"]["rate"]
        parts.append(f"## {titles[mix]}\n\n{mix_table(res, args.rows, args.batch)}\n\n"
                     f"`--jobs 2` after start-up: {speedup:.2f}× `--jobs 1` "
                     f"({res['jobs1']['seconds'] / res['jobs2']['seconds']:.2f}× start to exit).")
    parts.append(
        "## One message, start-up\n\n| | p50 | p99 |\n|---|---:|---:|\n"
        + "".join(f"| `classifier.score(one {len(text)}-character string)`, {name} | {single[name]['p50'] * 1e3:.2f} ms | "
                  f"{single[name]['p99'] * 1e3:.2f} ms |\n" for name, text in (("flagged", FLAGGED), ("plain", PLAIN)))
        + f"\n`import classifier`: {imported * 1e3:.0f} ms (best of 5 fresh interpreters)."
    )
    if dask:
        parts.append(f"## Dask, one file\n\n{bench_dask.report(dask, args.rows)}")
    parts.append(
        "Peak memory: the step's own process (`ru_maxrss`); for `--jobs 2` the summed resident sets (RSS) and "
        "proportional sets (PSS, shared pages split between the processes sharing them) of the command and its "
        "workers, sampled every 50 ms in a second run (the timed one is not sampled). \"Start to exit\" includes starting Python and loading the model; "
        "\"after start-up\" is the rate the command reports itself, from after the model is loaded.\n\n"
        f"Rerun: `python bench/bench_batch.py --rows {args.rows} --repeat {args.repeat}`"
    )
    body = "\n\n".join(parts) + "\n"
    print(body)
    Path(args.results).write_text("# Scoring benchmark\n\n" + body, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
