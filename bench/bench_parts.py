"""Where the time of ``score`` goes: each stage's microseconds a message, on one mix.

    python bench/bench_parts.py              # the log mix, 20,000 messages
    python bench/bench_parts.py --mix corpus

Stages, each timed alone on the same messages in chunks of 256 (best of
``--repeat``): bare fugashi; MeCab writing the project's format (lemma and
surface, ``tokenize._TAGGER_ARGS``); normalisation; reading MeCab's output
(``Tokenizer.read_many`` less MeCab); the features; the classifier;
``model.score`` without and with evidence; ``score_rows``; JSON in and out.
Differences between stages timed apart are as noisy as the machine.
"""

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def best(fn, repeat):
    seconds = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds = min(seconds, time.perf_counter() - start)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", choices=("log", "corpus"), default="log")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import fugashi

    import classifier
    from bench_batch import make_logs
    from classifier import batch
    from classifier.normalize import normalize
    from classifier.tokenize import _TAGGER_ARGS, Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        log = make_logs(tmp, args.rows)[args.mix]
        rows = list(batch.read_rows([log]))
        raw = Path(log).read_bytes()
    texts = [r.record["text"] for r in rows]
    chunks = [slice(i, i + batch.CHUNK) for i in range(0, len(texts), batch.CHUNK)]
    model = classifier.load()
    steps = model.pipeline.named_steps
    norms = [normalize(t).text for t in texts]
    docs = steps["read"].transform(texts)
    X = steps["features"].transform(docs)
    records = [r for c in chunks for r in batch.score_rows(model, rows[c])]
    tagger, writer, tokenizer = fugashi.Tagger(), fugashi.Tagger(_TAGGER_ARGS), Tokenizer()

    def score_without_evidence():
        for c in chunks:
            model.score(texts[c], evidence=False)

    def score_rows_with_evidence():
        for c in chunks:
            batch.score_rows(model, rows[c])

    def model_score():
        for c in chunks:
            model.score(texts[c])

    times = {
        "bare fugashi": lambda: [[w.surface for w in tagger(t)] for t in texts],
        "MeCab, the project's format": lambda: [writer.parse(t) for t in norms],
        "normalisation": lambda: [normalize(t) for t in texts],
        "read_many (MeCab included)": lambda: [tokenizer.read_many(norms[c]) for c in chunks],
        "features": lambda: [steps["features"].transform(docs[c]) for c in chunks],
        "classifier": lambda: [steps["clf"].predict_proba(X[c]) for c in chunks],
        "model.score, no evidence": score_without_evidence,
        "model.score": model_score,
        "score_rows": score_rows_with_evidence,
        "JSON in": lambda: list(batch.read_stream(io.BytesIO(raw), "log.jsonl")),
        "JSON out": lambda: [batch.to_json_line(r) for r in records],
    }
    us = {name: best(fn, args.repeat) / len(texts) * 1e6 for name, fn in times.items()}
    print(f"{args.mix} mix, {len(texts):,} messages, best of {args.repeat}; µs a message:\n")
    print("| stage | µs |\n|---|---:|")
    for name, value in us.items():
        print(f"| {name} | {value:.1f} |")
    reading = us["read_many (MeCab included)"] - us["MeCab, the project's format"]
    print(f"\nreading MeCab's output (read_many less MeCab): {reading:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
