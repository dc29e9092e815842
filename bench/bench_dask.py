"""Benchmark: one large log scored by ``--jobs 2`` and by a LocalCluster of 2 workers.

    python bench/bench_dask.py                    # a 20,000-message log made from data/samples
    python bench/bench_dask.py --log big.jsonl    # an existing log (e.g. the one bench_batch.py uses)

Both runs are the real command in a fresh process, timed from start to exit,
so both pay for starting Python and loading the model; the command's own
messages/s (from its summary line: reading, scoring and writing, after the
model is loaded in the command's process) is printed beside. The Dask run gets the
same rows split into ``--parts`` files (one file is one partition: a single
file would keep one worker busy and the other idle) and connects to a cluster
started beforehand (timed on its own): "fresh" is its first run, whose
workers import the package and load the model, "warm" a second run on it.
Each figure is the best of ``--repeat`` rounds, the three runs interleaved,
as other load on the machine only ever slows a run down. The outputs are
checked to be the same rows before any figure is printed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "samples" / "messages.jsonl"


def make_log(path, rows):
    """``rows`` messages cycled from the sample log, each with its own id."""
    sample = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({**sample[i % len(sample)], "id": f"bench-{i}"}, ensure_ascii=False) + "\n")


def split_log(path, folder, parts):
    """The log's lines in ``parts`` files of consecutive lines, named in order."""
    lines = Path(path).read_bytes().splitlines(keepends=True)
    size = -(-len(lines) // parts)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(parts):
        names.append(folder / f"part-{k:03d}.jsonl")
        names[-1].write_bytes(b"".join(lines[k * size : (k + 1) * size]))
    return [str(n) for n in names]


def timed(args):
    """Seconds from start to exit, and the messages/s of the command's summary line."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "classifier", *args], capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr.decode()}")
    return seconds, float(re.findall(r"([\d.]+) messages/s", proc.stderr.decode())[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", help="JSONL log to score (default: make one of --rows messages)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--parts", type=int, default=8, help="files the log is split into for the Dask run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is the best round's")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "dask"), help="scratch folder (replaced)")
    args = parser.parse_args(argv)

    import shutil

    from distributed import Client, LocalCluster

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = args.log or str(out / "log.jsonl")
    if not args.log:
        make_log(log, args.rows)
    parts = split_log(log, out / "parts", args.parts)
    rows = sum(1 for line in Path(log).read_bytes().splitlines() if line.strip())

    runs = {"local": [], "fresh": [], "warm": [], "cluster": []}
    for r in range(args.repeat):
        runs["local"].append(timed(["score", log, "--jobs", "2", "-o", str(out / f"local-{r}.jsonl")]))
        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster):
            runs["cluster"].append(time.perf_counter() - start)
            for name in ("fresh", "warm"):
                runs[name].append(timed(["score", *parts, "--dask", "--scheduler", cluster.scheduler_address,
                                         "-o", str(out / f"{name}-{r}")]))
        scored = sorted((out / f"fresh-{r}").glob("0*.jsonl"))
        if b"".join(p.read_bytes() for p in scored) != (out / f"local-{r}.jsonl").read_bytes():
            sys.exit("the Dask output differs from the local output")
    local_s, dask_s, warm_s = (min(runs[k]) for k in ("local", "fresh", "warm"))
    cluster_s = min(runs["cluster"])

    print(f"log: {rows} messages ({log}); {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"Dask run on {args.parts} files; LocalCluster started in {cluster_s:.1f} s; best of {args.repeat}")
    print(f"{'':32}{'end to end':>22}{'in the command':>18}  overhead (end to end, in the command)")
    for name, (seconds, inner) in [("--jobs 2", local_s), ("Dask, 2 workers, fresh cluster", dask_s),
                                   ("Dask, 2 workers, warm cluster", warm_s)]:
        overhead = "" if name == "--jobs 2" else f"  {seconds / local_s[0] - 1:+.0%}, {local_s[1] / inner - 1:+.0%}"
        print(f"{name:32}{seconds:6.1f} s {rows / seconds:7.1f} msg/s {inner:10.1f} msg/s{overhead}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
