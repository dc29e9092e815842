"""Command line: ``python -m classifier`` (also installed as ``crowd-scam-classifier``).

Commands: train, score, review, evaluate, compare, promote, rollback, serve, data check.
``train.py`` is ``python -m classifier train``.

Exit status: 0 success; 1 some rows failed (batch commands) or a promotion
was refused; 2 an unusable invocation (bad arguments, unreadable input or
model, bad data); 130 interrupted.
"""

import argparse
import sys

from .data import DataError


def _train_parser(prog="train.py"):
    parser = argparse.ArgumentParser(prog=prog, description="Train a model on labelled messages (LABELING.md format).")
    parser.add_argument("--data", action="append", required=True, metavar="PATH",
                        help="labelled JSONL/CSV file, or a directory (its train/ folder); repeatable")
    parser.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feedback", metavar="FILE", help="moderator decisions (JSONL) that override corpus labels")
    parser.add_argument("--force", action="store_true", help="replace an existing --out (never overrides --promote: see --force-promote)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    from .compare import TOLERANCE

    mod = parser.add_argument_group(
        "compare and promote", "Score one held-out set (the test part of each corpus --data directory, plus --eval files) with the new "
        "model and an old one, and write COMPARISON.md and comparison.json into --out. Feedback never trains on held-out messages.")
    mod.add_argument("--compare", metavar="DIR", help="the model to compare with, e.g. models/default")
    mod.add_argument("--eval", action="append", metavar="FILE", help="labelled JSONL/CSV file added to the held-out set; repeatable")
    mod.add_argument("--log", metavar="FILE", help="message log (JSONL/CSV) with request ids: list the requests whose review decision changes")
    mod.add_argument("--promote", action="store_true",
                     help="then copy --out over --promote-to, keeping the replaced model as 'previous', only if no label's held-out "
                          "F1 drops by more than --tolerance; exit status 1 when refused (compares with --promote-to)")
    mod.add_argument("--promote-to", metavar="DIR",
                     help="promotion target (default: $CLASSIFIER_MODEL or models/default); the replaced model goes to "
                          "models/previous, or DIR-previous for a target not named 'default'")
    mod.add_argument("--tolerance", type=float, default=TOLERANCE, metavar="F1",
                     help=f"largest F1 drop per label that --promote accepts (default {TOLERANCE})")
    mod.add_argument("--force-promote", action="store_true", help="promote even when the F1 gate fails, and record that it was forced")
    return parser


def train_main(argv=None, prog="train.py"):
    parser = _train_parser(prog)
    args = parser.parse_args(argv)
    from .errors import ClassifierError
    from .training import train

    try:
        plan = _moderation_plan(parser, args)
        manifest = train(args.data, args.out, seed=args.seed, feedback=plan["feedback"], force=args.force, progress=not args.quiet)
    except (ClassifierError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(manifest))
    return _compare_and_promote(args, plan) if plan["baseline"] or args.promote else 0


def _moderation_plan(parser, args):
    """Check --compare, --eval, --log and --promote before training, so a mistake costs no training run."""
    from pathlib import Path

    from .evaluate import test_split
    from .feedback import FeedbackFile
    from .model import default_model_path, load

    if (args.eval or args.log) and not (args.compare or args.promote):
        parser.error("--eval and --log need --compare or --promote")
    if (args.promote_to or args.force_promote) and not args.promote:
        parser.error("--promote-to and --force-promote need --promote")
    if not 0 <= args.tolerance < 1:
        parser.error(f"--tolerance must be in [0, 1), got {args.tolerance}")
    target = Path(args.promote_to) if args.promote_to else default_model_path()
    baseline = args.compare
    if baseline and Path(args.out).resolve() == Path(baseline).resolve():
        parser.error(f"--out {args.out} is the model to compare with; train into another directory")
    if args.promote:
        if Path(args.out).resolve() == target.resolve():
            parser.error(f"--out {args.out} is the promotion target; train into another directory")
        if baseline and Path(baseline).resolve() != target.resolve():
            parser.error(f"--promote gates on a comparison with the model it replaces: --compare {baseline} is not {target}")
        baseline = baseline or (target if target.exists() else None)
    heldout = test_split(args.data, args.eval or ())
    if baseline:
        if not heldout:
            raise DataError("--compare needs a held-out set: a corpus --data directory (its test part), or --eval FILE")
        load(baseline)
    if args.log and not Path(args.log).is_file():
        raise DataError(f"--log {args.log}: no such file (expected a JSONL/CSV message log with request ids)")
    # The held-out set travels with the decisions file: a decision on a held-out message is skipped, not trained on.
    feedback = FeedbackFile(args.feedback, holdout=heldout) if args.feedback else None
    return {"target": target, "baseline": baseline, "heldout": heldout, "feedback": feedback}


def _compare_and_promote(args, plan):
    from .compare import (PromotionError, PromotionRefused, compare, comparison_summary, promote, promotion_summary,
                          write_comparison)
    from .errors import ModelLoadError

    try:
        comparison = None
        if plan["baseline"]:
            comparison = compare(args.out, plan["baseline"], plan["heldout"], log=args.log, tolerance=args.tolerance)
            md, js = write_comparison(comparison, args.out)
            print(comparison_summary(comparison))
            print(f"wrote {md} and {js}")
        if args.promote:
            print(promotion_summary(promote(args.out, plan["target"], comparison=comparison, force=args.force_promote)))
    except PromotionRefused as e:
        print(f"not promoted: {e}", file=sys.stderr)
        return 1
    except (PromotionError, DataError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    from . import __version__

    parser = argparse.ArgumentParser(prog="python -m classifier", description="Score messages for off-platform solicitation and peer pressure.",
                                     epilog="Exit status: 0 success; 1 some rows failed or a promotion was refused; "
                                            "2 unusable invocation; 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a model (python -m classifier train --help)", add_help=False)
    sub.add_parser("data", help="check a corpus directory: data check data/", add_help=False)

    batch_epilog = """\
exit status:
  0    every row scored (or the rows with errors were accepted with --allow-errors
       or --max-errors)
  1    some rows failed: the summary line on standard error counts them; each has
       an "error" field in the output
  2    unusable invocation: bad arguments, unreadable input, a CSV header naming a
       column twice, an output that is an input, an unusable model, an output
       that could not be written (OUTPUT is left as it was)
  130  interrupted (SIGINT/SIGTERM)

A failed or interrupted run leaves OUTPUT as it was and what was written in
OUTPUT.partial. CSV output starts with a BOM (UTF-8 for Excel); text cells
starting with = + - @, a tab or a carriage return get a leading ' unless
--no-csv-escape."""
    score = sub.add_parser("score", help="score message logs (JSONL/CSV, .gz, - for stdin)",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=batch_epilog)
    score.add_argument("inputs", nargs="*", metavar="INPUT", help="JSONL or CSV files; none or - for standard input")
    score.add_argument("-o", "--output", metavar="OUTPUT",
                       help="output file, written whole at the end (default: standard output, streamed); "
                            ".csv for CSV, .gz for gzip")
    score.add_argument("--format", choices=("jsonl", "csv"), help="output format (default: by OUTPUT's extension, else jsonl)")
    score.add_argument("--input-format", choices=("jsonl", "csv"), help="input format when the extension does not tell (stdin)")
    score.add_argument("--text-field", default="text")
    score.add_argument("--id-field", default="id")
    score.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    score.add_argument("--only-flagged", action="store_true", help="write only flagged rows (and rows with errors)")
    score.add_argument("--dask", action="store_true", help="score on a Dask cluster; OUTPUT is a folder (needs the dask extra)")
    score.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: a LocalCluster)")
    score.add_argument("--blocksize", metavar="SIZE",
                       help="with --dask: JSONL files are split into blocks of about this size, on line boundaries "
                            "(default: at most 2MiB, as many as a multiple of the workers; .gz and CSV files are "
                            "one block each)")
    score.add_argument("--no-evidence", dest="evidence", action="store_false",
                       help="skip the evidence spans (\"evidence\" is an empty list): faster on logs with many flags")
    _add_model(score)

    review = sub.add_parser("review", help="recommend approve/review/deny per off-service contact request",
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=batch_epilog)
    review.add_argument("inputs", nargs="+", metavar="INPUT")
    review.add_argument("--group-field", default="request_id")
    review.add_argument("--approved-field", default="approved")
    review.add_argument("--text-field", default="text")
    review.add_argument("-o", "--output", metavar="OUTPUT",
                        help="output file, written whole at the end (default: standard output); .csv for CSV "
                             "(nested fields as JSON text), .gz for gzip")
    review.add_argument("--format", choices=("jsonl", "csv"), help="output format (default: by OUTPUT's extension, else jsonl)")
    _add_model(review)
    for batch_command in (score, review):
        batch_command.add_argument("--encoding", metavar="NAME",
                                   help="encoding of the inputs (default utf-8; a CSV input that is not UTF-8 is read "
                                        "as cp932, and the summary says so)")
        batch_command.add_argument("--allow-errors", action="store_true", help="exit status 0 even when rows have errors")
        batch_command.add_argument("--max-errors", type=int, metavar="N", help="exit status 0 when at most N rows have errors")
        batch_command.add_argument("--no-csv-escape", dest="csv_escape", action="store_false",
                                   help="write CSV cells as they are, even those a spreadsheet would run as a formula")

    evaluate = sub.add_parser("evaluate", help="score labelled files: figures per label at the model's thresholds, and the worst errors")
    evaluate.add_argument("inputs", nargs="+", metavar="DATA",
                          help="labelled JSONL/CSV file (LABELING.md format), or a corpus directory (its test part)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    evaluate.add_argument("--worst", type=int, default=5, metavar="N", help="worst false negatives and false positives per label (default 5)")
    _add_model(evaluate)

    from .compare import TOLERANCE

    compare_p = sub.add_parser("compare", help="compare a candidate model with another on held-out data; writes COMPARISON.md into the candidate")
    compare_p.add_argument("candidate", metavar="NEW", help="the new model directory")
    compare_p.add_argument("--against", metavar="OLD", help="the model to compare with (default: $CLASSIFIER_MODEL or models/default)")
    compare_p.add_argument("--data", action="append", default=[], metavar="DIR", help="corpus directory whose test part and eval sets are held out (default data/)")
    compare_p.add_argument("--eval", action="append", default=[], metavar="FILE", help="labelled file added to the held-out set; repeatable")
    compare_p.add_argument("--log", metavar="FILE", help="message log: list the requests whose decision changes")
    compare_p.add_argument("--tolerance", type=float, default=TOLERANCE, metavar="F1")

    promote_p = sub.add_parser("promote", help="compare a candidate with the current model and replace it if no label's F1 drops")
    promote_p.add_argument("candidate", metavar="NEW")
    promote_p.add_argument("--to", metavar="DIR", help="promotion target (default: $CLASSIFIER_MODEL or models/default)")
    promote_p.add_argument("--data", action="append", default=[], metavar="DIR")
    promote_p.add_argument("--eval", action="append", default=[], metavar="FILE")
    promote_p.add_argument("--tolerance", type=float, default=TOLERANCE, metavar="F1")
    promote_p.add_argument("--force-promote", action="store_true", help="promote even when the F1 gate fails (recorded)")

    rollback = sub.add_parser("rollback", help="put back the model the last promotion replaced (run again to undo)")
    rollback.add_argument("--model", metavar="DIR",
                          help="the promoted model directory (default: $CLASSIFIER_MODEL or models/default); "
                               "its previous model is models/previous, or DIR-previous for other names")

    serve = sub.add_parser("serve", help="a local web page where moderators review and decide requests (needs the serve extra)")
    serve.add_argument("log", metavar="LOG", help="message log (JSONL/CSV) with request_id, sender, sent_at, text")
    serve.add_argument("--decisions", default="decisions.jsonl", metavar="FILE",
                       help="decisions file (JSONL) to read and append to (default decisions.jsonl)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 for any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1); any other needs --token")
    serve.add_argument("--token", help="secret every request must carry (?token= once, then a cookie)")
    _add_model(serve)
    return parser, sub


def main(argv=None):
    """Entry point of ``python -m classifier``; returns the exit status."""
    from .errors import ClassifierError

    argv = sys.argv[1:] if argv is None else list(argv)
    # train and data have parsers of their own; they are listed in --help below.
    if argv[:1] == ["train"]:
        return train_main(argv[1:], prog="python -m classifier train")
    if argv[:1] == ["data"]:
        from .data import main as data_main

        return data_main(argv[1:])
    parser, _ = _parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ClassifierError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except FileExistsError as e:
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
    batch.check_tolerance(args.max_errors)
    if args.dask:
        try:
            from .dask import score_files
        except ImportError as e:
            raise batch.BatchError(str(e)) from None
        return score_files(args)
    if args.scheduler:
        raise batch.BatchError("--scheduler needs --dask")
    batch.check_inputs(args.inputs, input_format=args.input_format, encoding=args.encoding)
    batch.check_output(args.output, args.inputs)
    fmt = args.format or batch.output_format(args.output)
    model_path = args.model
    from .model import load

    # Loaded once, here: the --jobs workers are forked from this process and share it.
    model = load(model_path)
    summary = batch.Summary()
    # JSON lines are parsed where they are scored: with --jobs, in the workers.
    rows = batch.read_rows(args.inputs, input_format=args.input_format, encoding=args.encoding, stats=summary.stats,
                           parse=False)
    from tqdm import tqdm

    try:
        with batch.open_output(args.output) as stream, \
                tqdm(unit=" rows", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
            stopped = batch.run_batch(rows, batch.Writer(stream, fmt, csv_escape=args.csv_escape), summary, model=model,
                                      model_path=model_path, jobs=args.jobs, text_field=args.text_field,
                                      id_field=args.id_field, only_flagged=args.only_flagged, progress=bar,
                                      evidence=args.evidence)
            if stopped:
                raise batch.Stopped(stopped)  # inside the block: the output is kept as .partial, not put in place
    except batch.Stopped as e:
        print(f"interrupted by {e}; {batch.partial_note(args.output)}{summary.line()}", file=sys.stderr)
        return 130
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        # A full disk, a vanished directory: the summary still says how far the run got.
        print(summary.line(), file=sys.stderr)
        raise batch.output_failed(args.output, e) from None
    status = batch.exit_status(summary.errors, allow_errors=args.allow_errors, max_errors=args.max_errors)
    print(summary.line() + batch.errors_note(summary.errors, status), file=sys.stderr)
    return status


def _review(args):
    from . import batch
    from .model import load
    from .recommend import group_requests, review

    batch.check_tolerance(args.max_errors)
    batch.check_inputs(args.inputs, encoding=args.encoding)
    batch.check_output(args.output, args.inputs)
    fmt = args.format or batch.output_format(args.output)
    model = load(args.model)
    stats = {}
    counts = {"approve": 0, "review": 0, "deny": 0}
    try:
        groups, orphans = group_requests(batch.read_rows(args.inputs, encoding=args.encoding, stats=stats),
                                         group_field=args.group_field, approved_field=args.approved_field,
                                         text_field=args.text_field)
        with batch.open_output(args.output) as stream:
            writer = batch.Writer(stream, fmt, csv_escape=args.csv_escape, back=("evidence",),
                                  front=(args.group_field, "decision", "deny_probability", "messages", "reasons", "errors"))
            for request_id, group in groups.items():
                result = review(group["messages"], approved=group["approved"], model=model)
                counts[result["decision"]] += 1
                out = {args.group_field: request_id, **result, "messages": len(group["messages"])}
                if group["errors"]:
                    out["errors"] = group["errors"]
                writer.write([out])
            if orphans:
                writer.write([{args.group_field: None, "errors": orphans}])
    except KeyboardInterrupt:
        print(f"interrupted; {batch.partial_note(args.output)}".rstrip("; "), file=sys.stderr)
        return 130
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        raise batch.output_failed(args.output, e) from None
    bad = sum(len(g["errors"]) for g in groups.values()) + len(orphans)
    status = batch.exit_status(bad, allow_errors=args.allow_errors, max_errors=args.max_errors)
    print(f"requests {len(groups)}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; rows with errors {bad}"
          + batch.encoding_note(stats) + batch.errors_note(bad, status), file=sys.stderr)
    return status


def _evaluate(args):
    import json

    from .evaluate import evaluate, format_evaluation
    from .model import load

    if args.worst < 0:
        raise DataError(f"--worst must be 0 or more, got {args.worst}")
    result = evaluate(args.inputs, load(args.model), worst=args.worst)
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else format_evaluation(result))
    return 0


def _rollback(args):
    from .compare import PromotionError, rollback, rollback_summary

    try:
        print(rollback_summary(rollback(args.model)))
    except PromotionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0



def _serve(args):
    try:
        from .serve import serve
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return serve(args.log, args.decisions, host=args.host, port=args.port, token=args.token, model=args.model)


def _heldout(args):
    from pathlib import Path

    from .evaluate import test_split

    heldout = test_split(args.data or [Path("data")], args.eval)
    if not heldout:
        raise DataError("no held-out set: pass a corpus --data directory or --eval FILE")
    return heldout


def _compare(args):
    from .compare import compare, comparison_summary, write_comparison
    from .model import default_model_path

    comparison = compare(args.candidate, args.against or default_model_path(), _heldout(args), log=args.log,
                         tolerance=args.tolerance)
    md, js = write_comparison(comparison, args.candidate)
    print(comparison_summary(comparison))
    print(f"wrote {md} and {js}")
    return 0


def _promote(args):
    from pathlib import Path

    from .compare import PromotionRefused, compare, promote, promotion_summary
    from .model import default_model_path

    target = Path(args.to) if args.to else default_model_path()
    comparison = compare(args.candidate, target, _heldout(args), tolerance=args.tolerance) if target.exists() else None
    try:
        print(promotion_summary(promote(args.candidate, target, comparison=comparison, force=args.force_promote)))
    except PromotionRefused as e:
        print(f"not promoted: {e}", file=sys.stderr)
        return 1
    return 0


_COMMANDS = {"score": _score, "review": _review, "evaluate": _evaluate, "compare": _compare, "promote": _promote,
             "rollback": _rollback, "serve": _serve}
