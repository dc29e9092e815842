"""Check that the fast scoring paths give what the plain ones give, to the last bit.

    python bench/check_identical.py               # the corpus, disguises and 20,000 random texts
    python bench/check_identical.py --fuzz 2000   # quicker

Scoring takes short cuts that must not change a single result; each is
checked here against the plain way, kept in this file as it was written
before the short cuts:

* ``normalize``: passes skipped because a text lacks every character a
  match needs, against every pass run;
* ``Tokenizer``: MeCab's output read by one regex, against fugashi's nodes
  and ``feature.lemma``, token by token (surface, lemma, offsets);
* the feature rows: each text read once, n-grams counted as numbers, against
  the fitted feature union's own ``transform`` (scikit-learn's vectorizers),
  every stored value equal; and ``Model.predict_proba`` against the pipeline's
  (with, for a text longer than ``WINDOW``, the maximum over its windows),
  ``np.array_equal``;
* ``Model.score`` and ``Model.explain``: the evidence of a whole batch weighed
  in one array and its runs found with arrays, against the per-text loop
  (``weight[a:b] += ...``, then character by character), with the span
  weights unrounded, so that every bit of every character's weight counts
  (the spans are then cut and widened by the model's own rules, ``_spans``);
* the same once more with the character tables switched off (the path for
  character n-grams longer than three).

Exits 1 at the first difference, naming the text.
"""

import argparse
import glob
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import classifier  # noqa: E402
import classifier.features as features  # noqa: E402
import classifier.model as model_module  # noqa: E402
import classifier.normalize as normalize_module  # noqa: E402
from classifier.normalize import normalize  # noqa: E402
from classifier.tokenize import Token  # noqa: E402

DISGUISES = [
    "", " ", "\n\n\n", "\x00\u200bＬ　Ｉ　Ｎ　Ｅ\u2028で", "ら い ん @abc_def 090-1234-5678 foo@example.com",
    "あ" * 3000, "か゛き゛ ﾗｲﾝ ＩＤ：ａｂｃ１２３", "ΑΒΓ АВС\tx\r\ny", "れいきゅうぜろいちにさんよんごろく",
    "〇九〇一二三四五六七八", "x" * 120_000 + "ラインで", "ｅ\u0301" * 50 + " <email> <url>", "l|ne で連絡", "|!ne",
    "g m a i l", "ちゃ・と・わ", "ディスコード", "www.example.com/a", "abc (at) example (dot) com", "ID: taro_00",
    "ライン-line", "\x1e\x1fセパレータ", '"quoted", text', "- - -", "a-b c-d",
]
PIECES = [
    "line", "LINE", "Ｌ Ｉ Ｎ Ｅ", "l1ne", "ら い ん", "らいん", "ライン", "ﾗｲﾝ", "緑のアプリ", "gmail", "g m a i l",
    "じーめーる", "@", " at ", "(at)", "あっとまーく", "dot", "どっと", ".", "com", "jp", "www.", "http://",
    "https://x.y/z", "090", "0", "1", "2", "-", "ー", "の", "ぜろ", "きゅう", "〇", "九", "一", "id", "ID:", "です",
    "→", "abc_12", "@foo_bar", " ", "  ", "\n", "\n\n\n", "\r\n", "\t", "\u200b", "\ufe0f", "か", "゛", "\u3099",
    "e\u0301", "Ａ", "Α", "а", "discord", "d1scord", "テレグラム", "すかいぷ", "kakao", "z00m", "ずーむ", "…",
    "・", "!", "?", "é", "ß", "ﬁ", "\u2028", "\x00", "こんにちは", "連絡", "直接", "<email>", "<", ",", '"',
    "\x1e", "\x1f", "ライン-line", "支払い", "他の人はもう始めています", "手数料", "LINEで送ります",
]


def corpus():
    texts = []
    for path in sorted(glob.glob(str(ROOT / "data" / "**" / "*.jsonl"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    text = json.loads(line).get("text")
                    if isinstance(text, str):
                        texts.append(text)
    return list(dict.fromkeys(texts))


def fuzz(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            out.append("".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25))))
        else:
            blocks = [(0x20, 0x7E), (0xA0, 0x2FFF), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF)]
            out.append("".join(chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(1, 60))))
    return out


def fail(what, text, detail=""):
    sys.exit(f"DIFFERENT {what} for {text[:120]!r}{': ' + detail if detail else ''}")


# --- the plain ways -------------------------------------------------------------

def normalize_every_pass(text):
    may_match, any_tool = normalize_module._may_match, normalize_module._ANY_TOOL
    normalize_module._may_match, normalize_module._ANY_TOOL = (lambda pattern, text: True), None
    try:
        return normalize(text)
    finally:
        normalize_module._may_match, normalize_module._ANY_TOOL = may_match, any_tool


def tokens_by_node(tokenizer, text):
    """Tokenizer.tokens as it was: fugashi's nodes, feature.lemma."""
    import fugashi

    from classifier.normalize import split_placeholders
    from classifier.tokenize import _pieces

    tagger = tokens_by_node.tagger = getattr(tokens_by_node, "tagger", None) or fugashi.Tagger()
    out = []
    for a, b, is_placeholder in split_placeholders(text):
        if is_placeholder:
            out.append(Token(text[a:b], text[a:b], a, b))
            continue
        for pa, pb in _pieces(text, a, b, tokenizer.max_piece):
            pos = pa
            for word in tagger(text[pa:pb]):
                pos += len(word.white_space)
                surface = word.surface
                lemma = word.feature.lemma or surface
                lemma = lemma.split("-", 1)[0] or surface
                out.append(Token(surface, lemma, pos, pos + len(surface)))
                pos += len(surface)
    return out


def explain_by_loop(model, text, labels):
    """Model.explain as it was: one text, scikit-learn's transforms, a loop of slices (today's span rules)."""
    norm = normalize(text)
    if not norm.text:
        return []
    words, chars = model._words, model._chars
    rows = []
    for vec in (words, chars):
        row = vec.transform([norm.text]).tocsr()
        rows.append(dict(zip(row.indices.tolist(), row.data.tolist())))
    tokens = tokens_by_node(model._tokenizer, norm.text)
    n_words = len(words.vocabulary_)
    spans = []
    for label in labels:
        coef = model._clf.coef_[model.labels.index(label)]
        weight = np.zeros(len(norm.text))
        spread(weight, word_occurrences(tokens, words), rows[0], coef[:n_words])
        spread(weight, char_occurrences(norm.text, chars), rows[1], coef[n_words:])
        spans += model_module._spans(norm, weight, 0, runs_of(weight), label)
    spans.sort(key=lambda s: -s["weight"])
    return spans


def word_occurrences(tokens, vec):
    lemmas = [t.lemma for t in tokens]
    lo, hi = vec.ngram_range
    for n in range(lo, hi + 1):
        for i in range(len(lemmas) - n + 1):
            j = vec.vocabulary_.get(" ".join(lemmas[i : i + n]))
            if j is not None:
                yield j, tokens[i].start, tokens[i + n - 1].end


def char_occurrences(text, vec):
    lo, hi = vec.ngram_range
    for n in range(lo, hi + 1):
        for i in range(len(text) - n + 1):
            j = vec.vocabulary_.get(text[i : i + n])
            if j is not None:
                yield j, i, i + n


def spread(weight, occurrences, values, coef):
    occurrences = list(occurrences)
    counts = {}
    for j, _, _ in occurrences:
        counts[j] = counts.get(j, 0) + 1
    for j, a, b in occurrences:
        contribution = values.get(j, 0.0) * coef[j]
        if contribution > 0:
            weight[a:b] += contribution / counts[j] / (b - a)


def runs_of(weight):
    """The runs of characters that become spans, found character by character."""
    top = weight.max() if len(weight) else 0.0
    if top <= 0:
        return []
    hot = weight >= 0.25 * top
    runs, i, n = [], 0, len(weight)
    while i < n:
        if not hot[i]:
            i += 1
            continue
        j = i
        while j < n and (hot[j] or (j + 1 < n and hot[j + 1])):
            j += 1
        runs.append((i, j))
        i = j
    return runs


def proba_by_pipeline(model, text):
    """Model.predict_proba of one text the plain way: the pipeline, and windows of a long text."""
    probs = model.pipeline.predict_proba([text])[0]
    norm = normalize(text).text
    if len(norm) > model_module.WINDOW:
        from classifier.tokenize import _pieces

        windows = [norm[a:b] for a, b in _pieces(norm, 0, len(norm), model_module.WINDOW)]
        probs = np.maximum(probs, model._clf.predict_proba(model._union.transform(windows)).max(axis=0))
    return probs


# --- the checks ---------------------------------------------------------------------

def check_normalize(texts):
    for text in texts:
        a, b = normalize(text), normalize_every_pass(text)
        if (a.text, a.starts, a.ends) != (b.text, b.starts, b.ends):
            fail("normalize", text, f"{a.text[:60]!r} vs {b.text[:60]!r}")


def check_tokens(model, texts):
    tokenizer = model._tokenizer
    for text in texts:
        norm = normalize(text).text
        got, expected = tokenizer.tokens(norm), tokens_by_node(tokenizer, norm)
        if got != expected:
            fail("tokens", norm, next(f"{g} vs {e}" for g, e in zip(got + [None], expected + [None]) if g != e))
        if tokenizer(norm) != [t.lemma for t in expected]:
            fail("lemmas", norm)


def check_scores(model, texts, batch=256):
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        norms = [normalize(t).text for t in chunk]
        fast = features.transform_read(model._union, [model._tokenizer.read(n) for n in norms]).X.tocsr()
        plain = model._union.transform(norms).tocsr()
        fast.sort_indices(), plain.sort_indices()
        for k in range(len(chunk)):
            a, b = slice(fast.indptr[k], fast.indptr[k + 1]), slice(plain.indptr[k], plain.indptr[k + 1])
            if not (np.array_equal(fast.indices[a], plain.indices[b]) and np.array_equal(fast.data[a], plain.data[b])):
                fail("feature rows", chunk[k])
        fast = model.predict_proba(chunk)
        plain = model.pipeline.predict_proba(chunk)
        long = [k for k, n in enumerate(norms) if len(n) > model_module.WINDOW]
        for k in long:
            plain[k] = proba_by_pipeline(model, chunk[k])
        if not np.array_equal(fast, plain):
            k = int(np.argmax(np.abs(fast - plain).max(axis=1)))
            fail("predict_proba", chunk[k], f"{fast[k]} vs {plain[k]}")
        # Unrounded span weights: a change in any bit of any character's weight shows.
        model_module.round = lambda x, ndigits=None: x
        try:
            scored = model.score(chunk)
            for text, result in zip(chunk, scored):
                if result["flagged"]:
                    expected = explain_by_loop(model, text, result["flagged"])
                    if result["evidence"] != expected:
                        fail("evidence (score)", text, f"{result['evidence'][:2]} vs {expected[:2]}")
                    if model.explain(text, result["flagged"]) != expected:
                        fail("evidence (explain)", text)
        finally:
            del model_module.round


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the shipped one)")
    parser.add_argument("--fuzz", type=int, default=20_000, help="random texts besides the corpus (default 20,000)")
    args = parser.parse_args(argv)
    model = classifier.load(args.model)
    texts = corpus() + DISGUISES
    random_texts = fuzz(args.fuzz)
    print(f"{len(texts)} corpus texts and disguises, {len(random_texts)} random texts", file=sys.stderr)
    check_normalize(texts + random_texts)
    print("normalize: same", file=sys.stderr)
    check_tokens(model, texts + random_texts)
    print("tokens: same", file=sys.stderr)
    # Scores of the long texts cost minutes in the plain explanation: the corpus and a share of the rest.
    scored = [t for t in texts if len(t) < 20_000] + random_texts[: max(1, len(random_texts) // 10)]
    check_scores(model, scored)
    print("predict_proba, score, explain: same", file=sys.stderr)
    char_table = features.char_table
    features.char_table = model_module.char_table = lambda vec: None
    try:
        check_scores(model, scored[:2000])
    finally:
        features.char_table = model_module.char_table = char_table
    print("the same without character tables", file=sys.stderr)
    print("all identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
