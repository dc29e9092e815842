"""Command line: python -m classifier {score,review,evaluate,rollback,serve}, and train.py."""

import argparse
import sys

from .data import DataError


def _train_parser():
    parser = argparse.ArgumentParser(prog="train.py", description="Train a model on labelled messages (LABELING.md format).")
    parser.add_argument("--data", action="append", required=True, metavar="PATH",
                        help="labelled JSONL/CSV file, or a directory (its train/ folder); repeatable")
    parser.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feedback", metavar="FILE", help="moderator decisions (JSONL) that override corpus labels")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def train_main(argv=None):
    args = _train_parser().parse_args(argv)
    from .training import train

    try:
        manifest = train(args.data, args.out, seed=args.seed, feedback=args.feedback, force=args.force, progress=not args.quiet)
    except (DataError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(manifest))
    return 0


def _summary(manifest):
    rows = [f"model written; {manifest['data']['rows']} rows, params {manifest['params']}",
            f"{'label':<14} {'threshold':>9} {'cv P':>6} {'cv R':>6} {'cv F1':>6} {'cv AP':>6} {'test F1':>8}"]
    for label, m in manifest["cv"]["metrics"].items():
        test = manifest.get("test", {}).get("metrics", {}).get(label, {}).get("f1")
        rows.append(f"{label:<14} {manifest['thresholds'][label]:>9.4f} {m['precision']:>6.3f} {m['recall']:>6.3f} "
                    f"{m['f1']:>6.3f} {m['average_precision']:>6.3f} {test if test is not None else '-':>8}")
    for name, r in manifest.get("real_chat", {}).items():
        rows.append(f"real chat {name}: {r['flagged']}/{r['rows']} flagged ({r['rate']:.2%})")
    return "\n".join(rows)


def _add_model(parser):
    parser.add_argument("--model", metavar="DIR", help="model directory (default: the shipped models/default)")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m classifier", description="Score messages for off-platform solicitation and peer pressure.")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score message logs (JSONL/CSV, .gz, - for stdin)")
    score.add_argument("inputs", nargs="*", metavar="INPUT", help="JSONL or CSV files; none or - for standard input")
    score.add_argument("-o", "--output", metavar="OUTPUT", help="output file (default: standard output)")
    score.add_argument("--format", choices=("jsonl", "csv"), help="output format (default: by OUTPUT's extension, else jsonl)")
    score.add_argument("--input-format", choices=("jsonl", "csv"), help="input format when the extension does not tell (stdin)")
    score.add_argument("--text-field", default="text")
    score.add_argument("--id-field", default="id")
    score.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    score.add_argument("--only-flagged", action="store_true", help="write only flagged rows (and rows with errors)")
    score.add_argument("--dask", action="store_true", help="score on a Dask cluster; OUTPUT is a folder (needs the dask extra)")
    score.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: a LocalCluster)")
    _add_model(score)

    review = sub.add_parser("review", help="recommend approve/review/deny per off-service contact request")
    review.add_argument("inputs", nargs="+", metavar="INPUT")
    review.add_argument("--group-field", default="request_id")
    review.add_argument("--approved-field", default="approved")
    review.add_argument("--text-field", default="text")
    review.add_argument("-o", "--output", metavar="OUTPUT")
    _add_model(review)
    return parser, sub


def main(argv=None):
    """Entry point of ``python -m classifier``; returns the exit status."""
    from . import batch
    from .persist import ModelLoadError

    parser, _ = _parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (batch.BatchError, ModelLoadError, DataError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (| head): not an error of ours.
        sys.stderr.close()
        return 0


def _score(args):
    from . import batch

    if args.jobs < 1:
        raise batch.BatchError(f"--jobs must be at least 1, got {args.jobs}")
    if args.dask:
        from .dask import score_files

        return score_files(args)
    batch.check_inputs(args.inputs)
    fmt = args.format or ("csv" if (args.output or "").lower().endswith(".csv") else "jsonl")
    stream = batch.open_output(args.output)
    model_path = args.model
    from .model import load

    model = load(model_path) if args.jobs == 1 else None
    if args.jobs > 1:
        load(model_path)  # fail here, with a clear message, not in every worker
    summary = batch.Summary()
    rows = batch.read_rows(args.inputs, input_format=args.input_format, stats=summary.stats)
    from tqdm import tqdm

    with tqdm(unit=" rows", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
        stopped = batch.run_batch(rows, batch.Writer(stream, fmt), summary, model=model, model_path=model_path,
                                  jobs=args.jobs, text_field=args.text_field, id_field=args.id_field,
                                  only_flagged=args.only_flagged, progress=bar)
    if stream is not sys.stdout:
        stream.close()
    print(("interrupted by " + stopped + "; " if stopped else "") + batch.Summary.line(summary), file=sys.stderr)
    return 130 if stopped else 0


def _review(args):
    import json

    from . import batch
    from .model import load
    from .recommend import group_requests, review

    batch.check_inputs(args.inputs)
    stream = batch.open_output(args.output)
    model = load(args.model)
    stats = {}
    groups, orphans = group_requests(batch.read_rows(args.inputs, stats=stats), group_field=args.group_field,
                                     approved_field=args.approved_field, text_field=args.text_field)
    counts = {"approve": 0, "review": 0, "deny": 0}
    for request_id, group in groups.items():
        result = review(group["messages"], approved=group["approved"], model=model)
        counts[result["decision"]] += 1
        out = {args.group_field: request_id, **result, "messages": len(group["messages"])}
        if group["errors"]:
            out["errors"] = group["errors"]
        stream.write(json.dumps(out, ensure_ascii=False, default=str) + "\n")
    if orphans:
        stream.write(json.dumps({args.group_field: None, "errors": orphans}, ensure_ascii=False) + "\n")
    if stream is not sys.stdout:
        stream.close()
    bad = sum(len(g["errors"]) for g in groups.values()) + len(orphans)
    print(f"requests {len(groups)}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; rows with errors {bad}", file=sys.stderr)
    return 0


_COMMANDS = {"score": _score, "review": _review}
