"""The fast paths give what the reference paths give, to the last bit."""

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp

from classifier import batch
from classifier.features import _char_hits, char_analyzer
from conftest import ON_PLATFORM, ROOT, read_jsonl

SCAMS = [
    "LINEのIDを送るのでそちらで詳しくお話ししましょう。他の方はもう追加済みです。",
    "ら い ん で連絡ください。ID: taro_0000 手数料がもったいないので直接契約で。",
    "メールは taro＠example。com です。こちらのほうが早いです",
]


def _tfidf(rows, cols, n_rows, idf):
    """Rows of sublinear TF-IDF, l2-normalised, from (row, feature) occurrences."""
    X = sp.csr_matrix((np.ones(len(rows)), (rows.astype(np.int32), cols.astype(np.int32))), shape=(n_rows, len(idf)))
    X.sum_duplicates()
    X.sort_indices()
    X.data = (np.log(X.data) + 1.0) * idf[X.indices]
    sizes = np.diff(X.indptr)
    norms = np.sqrt(np.bincount(np.repeat(np.arange(n_rows), sizes), weights=X.data**2, minlength=n_rows))
    X.data /= np.repeat(norms, sizes)
    return X


def _texts():
    rows = read_jsonl((ROOT / "data" / "written" / "e_adversarial.jsonl").read_text(encoding="utf-8"))
    return [r["text"] for r in rows[:200]] + SCAMS + ON_PLATFORM + ["", " ", "<email>", "a" * 3000]


def _reference_features(features, docs):
    """TextFeatures.transform as it was: each half by _tfidf, then scipy's hstack."""
    n = len(docs)
    ids = [features.word_ids(doc) for doc in docs]
    rows = np.repeat(np.arange(n), [len(i) for i in ids])
    cols = np.concatenate(ids)
    known = cols >= 0
    words = _tfidf(rows[known], cols[known], n, features.word_idf_)
    rows, cols = _char_hits([char_analyzer(doc) for doc in docs], features.lookups()[1])
    chars = _tfidf(rows, cols, n, features.char_idf_)
    return sp.hstack([words, chars], format="csr")


def test_features_in_one_pass_equal_the_two_halves_stacked(model):
    steps = model.pipeline.named_steps
    docs = steps["read"].transform(_texts())
    fast, reference = steps["features"].transform(docs), _reference_features(steps["features"], docs)
    reference.sort_indices()
    assert fast.shape == reference.shape and fast.has_sorted_indices
    assert np.array_equal(fast.indptr, reference.indptr) and np.array_equal(fast.indices, reference.indices)
    assert np.array_equal(fast.data, reference.data)  # bit for bit, not approximately
    assert fast.indices.dtype == fast.indptr.dtype == np.int32
    one = steps["features"].transform(docs[:1])
    assert np.array_equal(one.toarray(), fast[:1].toarray())


def test_no_evidence_gives_the_same_scores_without_spans(model):
    texts = _texts()
    full, bare = model.score(texts), model.score(texts, evidence=False)
    assert any(r["evidence"] for r in full)
    assert all(r["evidence"] == [] for r in bare)
    assert [{k: v for k, v in r.items() if k != "evidence"} for r in full] == \
           [{k: v for k, v in r.items() if k != "evidence"} for r in bare]


def _reference_evidence(model, text, labels):
    """Evidence the plain way: one text, a loop over its features' occurrences and over their characters."""
    from collections import Counter

    from classifier.explain import MAX_SPANS, _widen
    from classifier.features import lemmas

    steps = model.pipeline.named_steps
    features, coef = steps["features"], steps["clf"].coef_
    doc = steps["read"].transform([text])[0]
    row, t, tokens = features.transform([doc]).toarray()[0], doc.text, doc.reading.tokens()
    occurrences = []  # (feature, start, end): words n by n, then characters n by n, each by place
    words = {w: i for i, w in enumerate(features.words_)}
    seq = lemmas(doc, features.tool_classes)
    for n in range(1, features.word_ngram_max + 1):
        for p in range(len(seq) - n + 1):
            if " ".join(seq[p : p + n]) in words:
                occurrences.append((words[" ".join(seq[p : p + n])], tokens[p].start, tokens[p + n - 1].end))
    chars = {c: features.n_words_ + i for i, c in enumerate(features.chars_)}
    for n in range(features.char_ngram_range[0], features.char_ngram_range[1] + 1):
        occurrences += [(chars[t[p : p + n]], p, p + n) for p in range(len(t) - n + 1) if t[p : p + n] in chars]
    occurrences = [o for o in occurrences if o[2] > o[1]]
    counts = Counter(j for j, _, _ in occurrences)
    out = []
    for k, label in enumerate(model.labels):
        if label not in labels:
            continue
        weight = [0.0] * len(t)
        for j, a, b in occurrences:
            contribution = row[j] * coef[k][j]
            if contribution > 0:
                for x in range(a, b):
                    weight[x] += contribution / counts[j] / (b - a)
        top = max(weight, default=0.0)
        hot = [top > 0 and w >= 0.25 * top for w in weight]
        covered = [h or (x + 1 < len(t) and hot[x + 1]) for x, h in enumerate(hot)]
        runs, x = [], 0
        while x < len(t):
            if not covered[x]:
                x += 1
                continue
            a = x
            while x < len(t) and covered[x]:
                x += 1
            a += not hot[a]
            runs.append((a, x, round(sum(weight[a:x]), 4)))
        runs.sort(key=lambda run: -run[2])
        top = runs[0][2] if runs else 0
        for a, b, w in [run for run in runs if run[2] >= 0.1 * top][:MAX_SPANS]:
            i, j = _widen(t, a, b)
            start, end = doc.norm.span(i, j)
            span = {"label": label, "start": start, "end": end, "text": text[start:end], "weight": w}
            if t[i:j] != span["text"]:
                span["normalized"] = t[i:j]
            out.append(span)
    out.sort(key=lambda s: -s["weight"])
    return out


def test_evidence_equals_the_plain_loop(model):
    texts = _texts() + [r["text"] for r in read_jsonl((ROOT / "data" / "written" / "u_plain_defiance.jsonl")
                                                       .read_text(encoding="utf-8"))[:150]]
    results = model.score(texts)
    flagged = [(text, r) for text, r in zip(texts, results) if r["flagged"]]
    assert len(flagged) > 100
    for text, result in flagged:
        assert result["evidence"] == _reference_evidence(model, text, result["flagged"]), text


def _log(tmp_path, texts):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
                   encoding="utf-8")
    return log


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_jobs_2_writes_what_jobs_1_writes(model, tmp_path, fmt):
    # Workers forked with the parent's model; for JSONL they write the lines themselves.
    rows = [batch.Row(i + 1, {"id": i, "text": t}) for i, t in enumerate(_texts() * 3)]
    rows.insert(5, batch.Row(6, error="line 6 is not JSON"))
    outs = []
    for jobs in (1, 2):
        out, summary = io.StringIO(), batch.Summary()
        assert batch.run_batch(iter(rows), batch.Writer(out, fmt), summary, model=model, jobs=jobs,
                               chunk_size=64, only_flagged=True) is None
        outs.append((out.getvalue(), summary.read, summary.scored, summary.errors, dict(summary.flagged)))
    assert outs[0] == outs[1]
    assert outs[0][3] >= 1 and outs[0][1] == len(rows)


def test_lines_parsed_in_the_workers_are_the_rows_the_reader_parses(tmp_path):
    from classifier.cli import main

    lines = [json.dumps({"id": i, "text": t}, ensure_ascii=False) for i, t in enumerate(SCAMS + ON_PLATFORM)]
    lines += ["not json", "[1, 2]", "[" * 150 + "]" * 150, "", "   ", '{"text": null}', '{"id": "x", "text": "\\ud800"}']
    log = tmp_path / "log.jsonl"
    log.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "\xff"}\n' + b"\xef\xbb\xbf{}\n")
    stats, lazy_stats = {}, {}
    eager = list(batch.read_rows([str(log)], stats=stats))
    lazy = list(batch.read_rows([str(log)], stats=lazy_stats, parse=False))
    assert any(r.json for r in lazy) and not any(r.json for r in eager)
    assert [batch.parsed(r) for r in lazy] == eager and stats == lazy_stats
    assert sum(r.error is not None for r in eager) >= 5
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}.jsonl"
        assert main(["score", str(log), "-o", str(out), "--jobs", jobs, "--allow-errors"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert len(outs[0].splitlines()) == len(eager)


def test_no_evidence_on_the_command_line(tmp_path):
    from classifier.cli import main

    log = _log(tmp_path, SCAMS + ON_PLATFORM)
    assert main(["score", str(log), "-o", str(tmp_path / "full.jsonl")]) == 0
    assert main(["score", str(log), "-o", str(tmp_path / "bare.jsonl"), "--no-evidence", "--jobs", "2"]) == 0
    full = read_jsonl(tmp_path / "full.jsonl")
    bare = read_jsonl(tmp_path / "bare.jsonl")
    assert any(r["evidence"] for r in full) and all(r["evidence"] == [] for r in bare)
    assert [{**r, "evidence": []} for r in full] == bare


def _every_written_text():
    return [r["text"] for path in sorted((ROOT / "data" / "written").glob("*.jsonl"))
            for r in read_jsonl(path.read_text(encoding="utf-8"))]


NFKC_CASES = [
    "ＬＩＮＥ！（ＩＤ：ｔａｒｏ）",  # full width, one for one
    "ｶﾞｲﾄﾞ ﾗｲﾝ",  # half-width kana with a voicing mark: two become one
    "㈱みらい ㍿ ﬁle …",  # one becomes several
    "か\u3099きくけこ q\u0301 e\u0301",  # combining marks: composed, or dropped
    "\u0301\u0301 a",  # marks with nothing to sit on
    "𝐋𝐈𝐍𝐄 ①②③ Ⅻ",  # math letters, circled digits, roman numerals
]


@pytest.mark.parametrize("text", NFKC_CASES + [""])
def test_nfkc_fast_path_equals_the_pass_it_replaces(text):
    from classifier.normalize import Normalized, _UNSTABLE, _nfkc, _sub, nfkc

    plain = Normalized(text, list(range(len(text))), list(range(1, len(text) + 1)), text)
    assert nfkc(plain) == _sub(_UNSTABLE, _nfkc, plain)


def test_nfkc_fast_path_on_the_whole_corpus():
    from classifier.normalize import Normalized, _UNSTABLE, _nfkc, _sub, nfkc

    for text in _every_written_text():
        plain = Normalized(text, list(range(len(text))), list(range(1, len(text) + 1)), text)
        assert nfkc(plain) == _sub(_UNSTABLE, _nfkc, plain), text


DISGUISES = [
    "ら い ん で", "L.I.N.E", "ＬＩＮＥ", "ﾗｲﾝ", "緑のアプリ", "g m a i l", "gmai1", "ちゃとわ", "でぃすこ", "テレグラ", "すかいぷ",
    "いんすた", "わっつあっぷ", "うぃーちゃっと", "kakao", "す ら っ く", "z00m", "０９０ー１２３４ー５６７８", "+81 90 1234 5678",
    "ぜろきゅうぜろ いちにさん よんごろく なな", "〇九〇・一二三四・五六七八", "a b c d 1 2", "taro at example dot com",
    "taro（あっと）example。com", "www.example.com", "example.jp/abc", "line id: abc_123", "ID→taro.55", "@handle_x",
    "a  b \n c\n\n\n\nd", "\t x \r\n y\u200b z\u2028", "か゛き゜", "ですか しちゃった くらい オンライン",
]


def _with_every_pass(monkeypatch):
    """normalize with no pass skipped: no group skip, no trigger looked for."""
    from classifier import normalize as module

    monkeypatch.setattr(module, "_ANY_FIRST", None)
    monkeypatch.setattr(module, "_ANY_TOOL", None)
    monkeypatch.setattr(module, "_LAST", [(pattern, repl, None) for pattern, repl, _ in module._LAST])
    monkeypatch.setattr(module, "_may_match", lambda pattern, text: True)


def _normalisation_texts():
    real = [r["text"] for path in sorted((ROOT / "data" / "real").glob("*.jsonl"))
            for r in read_jsonl(path.read_text(encoding="utf-8"))[::3]]
    return _every_written_text() + real + NFKC_CASES + DISGUISES


def test_passes_skipped_by_their_triggers_change_nothing(monkeypatch):
    from classifier.normalize import normalize

    texts = _normalisation_texts()
    fast = [normalize(text) for text in texts]
    _with_every_pass(monkeypatch)
    assert sum(a != b.text for a, b in zip(texts, fast)) > 1000  # the passes do work on these texts
    for text, got in zip(texts, fast):
        assert normalize(text) == got, text


def test_every_match_holds_its_trigger():
    from classifier import normalize as module

    patterns = [*module._FIRST, *(p for _, p in module._TOOL_PATTERNS), *(p for p, _, _ in module._LAST)]
    texts = _normalisation_texts()
    texts += [module.normalize(text).text for text in texts]
    matched = 0
    for pattern in patterns:
        trigger = module._trigger_of(pattern)
        assert trigger is not None, pattern.pattern  # each pass has one: none always runs
        for text in texts:
            m = pattern.search(text)
            if m:
                matched += 1
                assert trigger.search(text), (pattern.pattern, text)
    assert matched > 100


def _tokens_by_node(text):
    """The reference reading: fugashi's nodes, one at a time (slow, plain)."""
    import fugashi

    from classifier.normalize import split_placeholders
    from classifier.tokenize import Token, _pieces

    tagger, out = fugashi.Tagger(), []
    for a, b, is_placeholder in split_placeholders(text):
        if is_placeholder:
            out.append(Token(text[a:b], text[a:b], a, b))
            continue
        for pa, pb in _pieces(text, a, b, 1000):
            pos = pa
            for word in tagger(text[pa:pb]):
                pos += len(word.white_space)
                lemma = (word.feature.lemma or word.surface).split("-", 1)[0] or word.surface
                out.append(Token(word.surface, lemma, pos, pos + len(word.surface)))
                pos += len(word.surface)
    return out


def test_mecab_output_read_in_one_pass_equals_fugashi_node_by_node():
    from classifier.normalize import normalize
    from classifier.tokenize import Tokenizer

    tokenizer = Tokenizer()
    real = [r["text"] for path in sorted((ROOT / "data" / "real").glob("*.jsonl"))
            for r in read_jsonl(path.read_text(encoding="utf-8"))[::4]]
    odd = ["", "a" * 2500 + "。" + "b" * 10, 'x "quoted" <email> y', "-abc ーーー a-b-c ライン-line", "“引用”と'x'、\\ % ｜ 😀🙏",
           "<url> <phone>", "あ" * 1200, 'a,b"c,"d"']
    texts = _every_written_text() + real + NFKC_CASES + odd
    norms = [normalize(text).text for text in texts]
    for norm, together in zip(norms, tokenizer.read_many(norms)):
        reading = tokenizer.read(norm)
        expected = _tokens_by_node(norm)
        assert reading.tokens() == expected, norm
        assert reading.lemmas() == [t.lemma for t in expected]
        assert together.tokens() == expected and together.lemmas() == reading.lemmas(), norm


def test_nfkc_table_stays_bounded_and_right(monkeypatch):
    from classifier import normalize as module

    monkeypatch.setattr(module._OneForOne, "LIMIT", 100)
    table = module._OneForOne()
    monkeypatch.setattr(module, "_ONE_FOR_ONE", table)
    text = "".join(map(chr, range(0xFF01, 0xFF5E))) + "".join(map(chr, range(0x4E00, 0x4F00)))  # full-width ASCII, kanji
    plain = module.Normalized(text, list(range(len(text))), list(range(1, len(text) + 1)), text)
    assert module.nfkc(plain) == module._sub(module._UNSTABLE, module._nfkc, plain)
    assert len(table) <= 100


@pytest.mark.parametrize("word_ngram_max", [1, 2, 3])
def test_word_ngrams_keyed_by_their_words_equal_the_strings(monkeypatch, word_ngram_max):
    """n-grams looked up by their words' numbers, a batch at a time, give the rows the n-gram strings give."""
    from classifier import features as module
    from classifier.features import TextFeatures, TextReader

    docs = TextReader().transform(_texts())
    step = TextFeatures(word_ngram_max=word_ngram_max, char_ngram_range=(1, 2)).fit(docs[:150])
    assert step._keyed_ngrams() is not None
    keyed = step.transform(docs)
    together = step.word_ids_many(docs)
    one_by_one = [step.word_ids(doc) for doc in docs]
    assert len(together) == len(one_by_one) and all(np.array_equal(a, b) for a, b in zip(together, one_by_one))
    assert sum((ids >= 0).sum() for ids in together) > len(docs)
    monkeypatch.setattr(module, "_word_table", lambda words, vocabulary, hi: None)
    step = TextFeatures(word_ngram_max=word_ngram_max, char_ngram_range=(1, 2)).fit(docs[:150])
    assert step._keyed_ngrams() is None
    by_string = step.transform(docs)
    assert (keyed != by_string).nnz == 0 and np.array_equal(keyed.indices, by_string.indices)
