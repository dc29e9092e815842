"""Benchmark: ``score --dask`` on ONE large file, on a 2-worker LocalCluster.

    python bench/bench_dask.py --log big.jsonl          # standalone (compares with `score --jobs 1` on it)
    (bench_batch.py runs it on its corpus log and puts it in results.md)

The file is given as it is: the command splits it into byte-range blocks on
line boundaries (by default at most about 2 MiB each, as many as a multiple of
the workers; ``--blocksize`` to choose), so both workers have work. The cluster is
started beforehand as the command would start its own
(``classifier.dask.local_cluster``), timed on its own, and the command
connects to it with ``--scheduler``: "fresh" is its first run, whose workers import the package
and load the model, "warm" a second run on the same cluster. Each worker's
CPU seconds during the fresh run show whether both were busy. The output
files, concatenated in name order, must be the local ``--jobs 1`` output
byte for byte, and ``_summary.json``'s totals the local command's counts.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def timed(args):
    """Seconds from start to exit, and the messages/s of the command's summary line."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "classifier", *args], capture_output=True, cwd=ROOT, env=_env())
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr.decode()}")
    return {"seconds": seconds, "rate": float(re.findall(r"([\d.]+) messages/s", proc.stderr.decode())[-1])}


def _cpu():
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _counts(lines):
    counts = {"rows_read": 0, "rows_scored": 0, "rows_with_errors": 0, "flagged": {}}
    for line in lines:
        r = json.loads(line)
        counts["rows_read"] += 1
        counts["rows_with_errors" if "error" in r else "rows_scored"] += 1
        for label in r.get("flagged", ()):
            counts["flagged"][label] = counts["flagged"].get(label, 0) + 1
    return counts


def measure(log, local_out, folder, *, repeat=1, model=None, jobs1=None, blocksize=None):
    """Fresh and warm ``--dask`` runs of ``log``; checked against ``local_out`` (the --jobs 1 output)."""
    from distributed import Client

    from classifier.dask import local_cluster

    local = Path(local_out).read_bytes()
    expected = _counts(local.splitlines())
    runs = {"cluster": [], "fresh": [], "warm": [], "busy": []}
    extra = (["--blocksize", blocksize] if blocksize else []) + (["--model", model] if model else [])
    for r in range(repeat):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        start = time.perf_counter()
        with local_cluster(2, dashboard_address=":0") as cluster, Client(cluster) as client:
            runs["cluster"].append(time.perf_counter() - start)
            before = client.run(_cpu)
            for name in ("fresh", "warm"):
                out = os.path.join(folder, f"{name}-{r}")
                runs[name].append(timed(["score", log, "--dask", "--scheduler", cluster.scheduler_address, "-o", out,
                                         *extra]))
                if name == "fresh":
                    after = client.run(_cpu)
                    runs["busy"].append(sorted(after[w] - before[w] for w in after))
                parts = sorted(p for p in Path(out).iterdir() if p.name != "_summary.json")
                if b"".join(p.read_bytes() for p in parts) != local:
                    sys.exit("the Dask output differs from the local output")
                summary = json.loads((Path(out) / "_summary.json").read_text(encoding="utf-8"))
                got = {k: summary[k] for k in ("rows_read", "rows_scored", "rows_with_errors")}
                got["flagged"] = {k: v for k, v in summary["flagged"].items() if v}
                if got != expected:
                    sys.exit(f"the Dask summary {got} differs from the local counts {expected}")
    best = {k: min(runs[k], key=lambda x: x["seconds"]) for k in ("fresh", "warm")}
    return {**best, "cluster": min(runs["cluster"]), "busy": runs["busy"][-1], "partitions": len(parts),
            "jobs1": jobs1, "blocksize": blocksize, "repeat": repeat}


def _blocks_note(blocksize):
    return f"of about {blocksize}" if blocksize else "the command's default: at most about 2 MiB, a multiple of the workers"


def report(d, rows):
    lines = ["| run | seconds start to exit | msgs/s | msgs/s after start-up | × `--jobs 1` (start to exit, after start-up) |",
             "|---|---:|---:|---:|---:|"]
    j1 = d["jobs1"]
    lines.append(f"| `score --jobs 1` | {j1['seconds']:.1f} | {rows / j1['seconds']:,.0f} | {j1['rate']:,.0f} | 1.00, 1.00 |")
    for name in ("fresh", "warm"):
        r = d[name]
        lines.append(f"| `score --dask`, {name} cluster | {r['seconds']:.1f} | {rows / r['seconds']:,.0f} | {r['rate']:,.0f} | "
                     f"{j1['seconds'] / r['seconds']:.2f}, {r['rate'] / j1['rate']:.2f} |")
    busy = ", ".join(f"{s:.1f}" for s in d["busy"])
    return ("\n".join(lines) + f"\n\nOne {rows:,}-line file, split into {d['partitions']} blocks ({_blocks_note(d['blocksize'])}) "
            f"on a 2-worker LocalCluster (started in {d['cluster']:.1f} s, not counted); the workers' CPU seconds in "
            f"the fresh run: {busy}. Output files concatenated = the local output, byte for byte; `_summary.json` "
            "totals = the local counts (checked every run).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, help="JSONL log to score")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--blocksize", help="the command's --blocksize (default: the command's default)")
    args = parser.parse_args(argv)
    rows = sum(1 for line in Path(args.log).read_bytes().splitlines() if line.strip())
    with tempfile.TemporaryDirectory(prefix="bench_dask.") as tmp:
        local = os.path.join(tmp, "local.jsonl")
        jobs1 = timed(["score", args.log, "-o", local])
        d = measure(args.log, local, os.path.join(tmp, "dask"), repeat=args.repeat, jobs1=jobs1, blocksize=args.blocksize)
    print(report(d, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
