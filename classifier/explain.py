"""Evidence: the spans of a message's original text that drove a label's score.

Each feature's contribution to a label (its TF-IDF value in the message's row
times the label's coefficient, read from the fitted pipeline's public
``TextFeatures`` arrays and ``CalibratedLinear.coef_``) is spread over the
characters of its occurrences; runs of characters carrying a clear share of
the positive weight become spans, mapped back to the original text.
"""

import numpy as np

from .features import char_occurrences, find
from .normalize import PLACEHOLDER_RE

__all__ = ["evidence", "MAX_SPANS"]

#: Evidence spans reported per label.
MAX_SPANS = 5


def evidence(features, coef, labels, docs, X, todo):
    """Spans for Docs already scored: ``todo`` lists (index, labels), one list of spans each out.

    Parameters
    ----------
    features : TextFeatures
        The fitted features step.
    coef : ndarray, shape (n_labels, n_features)
    labels : sequence of str
        The label of each row of ``coef``.
    docs : list of Doc
    X : sparse matrix
        ``features.transform(docs)``.
    todo : list of (int, list of str)
        Which docs to explain, for which labels.

    The occurrences of all the texts are weighed at once, in one array with
    each text's characters in turn; every character's sum is the one the
    text alone would make.
    """
    if not todo:
        return []
    which = [i for i, _ in todo]
    texts = [docs[i].text for i in which]
    lengths = [len(t) for t in texts]
    bases = np.cumsum([0] + lengths)
    n_words = features.n_words_
    ids = features.word_ids_many([docs[i] for i in which])
    found = _word_occurrences(ids, [docs[i].reading for i in which], bases, (1, features.word_ngram_max))
    found += [(owner, ids + n_words, at, at + n) for n, owner, at, ids in char_occurrences(texts, features.lookups()[1])]
    owner, js, starts, ends = (np.concatenate(column) for column in zip(*found))
    sizes = ends - starts
    keep = sizes > 0  # (an empty occurrence has no characters to weigh)
    owner, js, starts, sizes = owner[keep], js[keep], starts[keep], sizes[keep]
    # Each occurrence's feature value in its text's row (0 if absent), and
    # how often the feature occurs in that text.
    X = X.tocsr()
    X = X if X.has_sorted_indices else X.sorted_indices()
    width = X.shape[1]
    # The rows' entries, in order (sorted, as each row's are): each one's place in X, and its key.
    first = X.indptr[which]
    row, at_x = _places(first, X.indptr[np.add(which, 1)] - first)
    row_keys = row * width + X.indices[at_x]
    keys = owner * width + js
    at = find(row_keys, at_x, keys)
    values = np.where(at >= 0, X.data[at], 0.0) if len(row_keys) else np.zeros(len(keys))
    _, which_key, counts = np.unique(keys, return_inverse=True, return_counts=True)
    occurrences = (js, values, counts[which_key.ravel()], sizes, *_places(starts, sizes))
    runs = {}
    for k, label in enumerate(labels):
        runs[label] = _hot_runs(_spread(bases[-1], occurrences, coef[k]), bases)
    out = []
    for k, (i, wanted) in enumerate(todo):
        spans = []
        for label in wanted:
            if label not in runs:
                raise ValueError(f"unknown label {label!r}; the labels are {list(labels)}")
            spans += _spans(docs[i].norm, bases[k], runs[label][k], label)
        spans.sort(key=lambda s: -s["weight"])
        out.append(spans)
    return out


def _word_occurrences(ids, readings, bases, ngram_range):
    """Where the texts' lemma n-grams of the vocabulary occur: [(text, features, starts, ends)], n by n.

    ``ids`` are the feature numbers of each text's lemma n-grams (n by n, -1
    where not in the vocabulary); starts and ends count from the first text.
    """
    starts, ends, counts = [], [], []
    for reading in readings:
        a, b = reading.offsets()
        starts += a
        ends += b
        counts.append(len(a))
    starts, ends = np.array(starts, dtype=np.intp), np.array(ends, dtype=np.intp)
    counts = np.array(counts, dtype=np.intp)
    # Token numbers count from the first text too; places in the texts as well.
    first_token = np.cumsum(counts) - counts
    shift = np.repeat(np.asarray(bases[: len(counts)], dtype=np.intp), counts)
    starts, ends = starts + shift, ends + shift
    ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.intp)
    lo, hi = ngram_range
    ns = range(lo, hi + 1) if hi > 1 else [1]  # as lemma_ids lays them out
    sizes = [np.maximum(counts - n + 1, 0) for n in ns]
    per_text = np.sum(sizes, axis=0)
    id_base = np.cumsum(per_text) - per_text
    found, before = [], np.zeros(len(counts), dtype=np.intp)
    for n, size in zip(ns, sizes):
        # The n-grams of every text: its ids from id_base + before, its tokens from first_token.
        owner = np.repeat(np.arange(len(counts)), size)
        within = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
        js = ids[id_base[owner] + before[owner] + within]
        token = first_token[owner] + within
        hit = np.flatnonzero(js >= 0)
        found.append((owner[hit], js[hit], starts[token[hit]], ends[token[hit] + n - 1]))
        before += size
    return found


def _places(starts, lengths):
    """Per character of every occurrence, in order: the occurrence, and the character's place."""
    owner = np.repeat(np.arange(len(starts)), lengths)
    return owner, np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths - starts, lengths)


def _spread(size, occurrences, coef):
    """Weights of characters: each occurrence's share of its feature's positive contribution.

    As a loop over the occurrences doing ``weight[a:b] += value * coef /
    count / (b - a)`` where the contribution is positive would make them, to
    the last bit: ``np.add.at`` adds unbuffered and in order, and the other
    occurrences add +0.0, which changes no sum.
    """
    js, values, counts, lengths, owner, places = occurrences
    contribution = values * coef[js]
    share = np.where(contribution > 0, contribution / counts / lengths, 0.0)
    weight = np.zeros(size)
    np.add.at(weight, places, share[owner])
    return weight


def _hot_runs(weight, bases):
    """Per text, the runs (start, end, weight) of its characters that become spans, weights rounded.

    A run starts at a character weighing at least a quarter of the text's
    heaviest (if that is positive) and goes on while the character, or the
    next one in the text, does: a gap of one character is bridged.
    """
    lengths = np.diff(bases)
    top = np.maximum.reduceat(weight, bases[:-1])
    hot = (weight >= np.repeat(0.25 * top, lengths)) & np.repeat(top > 0, lengths)
    last = np.zeros(len(weight), dtype=bool)
    last[bases[1:] - 1] = True  # a text's last character has no next one
    covered = hot.copy()
    covered[:-1] |= hot[1:] & ~last[:-1]
    first = np.zeros(len(weight), dtype=bool)
    first[bases[:-1]] = True
    before, after = np.zeros_like(covered), np.zeros_like(covered)  # the characters' neighbours' covered
    before[1:], after[:-1] = covered[:-1], covered[1:]
    run_start = np.flatnonzero(covered & (first | ~before))
    run_end = np.flatnonzero(covered & (last | ~after)) + 1
    # A run that starts on a bridging character starts on the hot one after it.
    run_start += ~hot[run_start]
    owner = np.searchsorted(bases, run_start, side="right") - 1
    # Each run's weight, all at once (in order, as a loop adding them one by one would).
    edges = np.column_stack([run_start, run_end]).ravel()
    sums = np.add.reduceat(np.append(weight, 0.0), edges)[0::2] if len(edges) else np.zeros(0)
    runs = [[] for _ in range(len(lengths))]
    for k, a, b, total in zip(owner.tolist(), run_start.tolist(), run_end.tolist(), sums.tolist()):
        runs[k].append((a, b, round(total, 4)))
    return runs


def _spans(norm, base, runs, label):
    """The spans of one text from its runs (a, b, weight) (places counted from ``base``), heaviest first."""
    runs = sorted(runs, key=lambda run: -run[2])
    # A stray character or two carrying a sliver of the weight is noise to a reader.
    top = runs[0][2] if runs else 0
    spans = []
    for a, b, weight in [run for run in runs if run[2] >= 0.1 * top][:MAX_SPANS]:
        i, j = _widen(norm.text, a - base, b - base)
        start, end = norm.span(i, j)
        span = {"label": label, "start": start, "end": end, "text": norm.original[start:end], "weight": weight}
        if norm.text[i:j] != span["text"]:
            span["normalized"] = norm.text[i:j]
        spans.append(span)
    return spans


def _widen(text, i, j):
    """Widen ``[i, j)`` to whole placeholders: a span never ends inside ``<email>``."""
    if "<" not in text:
        return i, j
    for m in PLACEHOLDER_RE.finditer(text, max(0, i - 10), min(len(text), j + 10)):
        if m.start() < j and m.end() > i:
            i, j = min(i, m.start()), max(j, m.end())
    return i, j
