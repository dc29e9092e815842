"""Undo disguises before anything else sees the text.

Every step rewrites the text with a regular expression and carries a map from
each character of the result back to the span of the original text it came
from, so evidence found in the normalised text can be shown in the original.

The steps, in order:

1. drop what MeCab and the eye cannot take: NUL and other controls, lone
   surrogates, format characters (zero-width, bidi, tags), variation selectors;
2. NFKC (full-width, half-width kana, circled and math letters), combining
   marks folded or dropped, separate voicing marks (か゛) joined;
3. ASCII lower case and Cyrillic/Greek look-alikes folded to Latin;
4. contact tools in disguise mapped to one form (ら い ん, L1NE, ﾗｲﾝ -> line);
5. single letters split by spaces, dots or emoji rejoined, digits written in
   kanji or kana read as digits;
6. contact handles replaced by placeholders (<email>, <phone>, <url>, <id>,
   <handle>), so a model learns that a handle was shared, not which one;
7. whitespace collapsed, and very long texts cut to their head and tail.
"""

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Normalized", "normalize", "PLACEHOLDERS", "MAX_CHARS", "TOOL_NAMES"]

#: Normalised texts longer than this keep their head and tail only: scam
#: messages are short, and both ends are where padding would hide one.
MAX_CHARS = 100_000

#: Raw texts longer than this are read as their head and tail before
#: normalising (a bound on memory; NFKC can only grow what is left).
RAW_LIMIT = 8 * MAX_CHARS

PLACEHOLDERS = ("<email>", "<phone>", "<url>", "<id>", "<handle>")


@dataclass(frozen=True)
class Normalized:
    """A normalised text with, per character, the original span it came from."""

    text: str
    #: Per character, where its span of the original starts and ends (ranges while every character is its own).
    starts: list
    ends: list
    original: str

    def span(self, start, end):
        """Map the span ``[start, end)`` of ``text`` to the original text."""
        if end <= start:
            pos = self.starts[start] if start < len(self.starts) else len(self.original)
            return pos, pos
        return self.starts[start], self.ends[end - 1]


def _sub(pattern, repl, norm):
    """Apply ``pattern.sub(repl)`` to a Normalized, keeping the offset map.

    A replacement of the same length maps character to character; any other
    maps every character it produces to the whole span it replaced.
    """
    return _replace(pattern, repl, norm) if _may_match(pattern, norm.text) else norm


def _replace(pattern, repl, norm):
    """``_sub`` without the look for a trigger."""
    text, starts, ends = norm.text, norm.starts, norm.ends
    out, new_starts, new_ends = [], [], []
    pos = 0
    for m in pattern.finditer(text):
        a, b = m.span()
        new = repl(m) if callable(repl) else repl
        if new == text[a:b]:
            continue
        out.append(text[pos:a])
        new_starts += starts[pos:a]
        new_ends += ends[pos:a]
        out.append(new)
        if len(new) == b - a:
            new_starts += starts[a:b]
            new_ends += ends[a:b]
        elif new:
            s = starts[a] if b > a else (ends[a - 1] if a else 0)
            e = ends[b - 1] if b > a else s
            new_starts += [s] * len(new)
            new_ends += [e] * len(new)
        pos = b
    if pos == 0:
        return norm
    out.append(text[pos:])
    new_starts += starts[pos:]
    new_ends += ends[pos:]
    return Normalized("".join(out), new_starts, new_ends, norm.original)


# Most passes cannot match most messages (a Japanese sentence has no "@",
# no Latin letters), yet each scan of the text cost as much as the rest of
# the work. So each pattern is read once for a trigger: a set of strings of
# which every match needs at least one in the text ("@", "at", "あっと"...),
# chosen to be rare in Japanese; a pass runs only when the text holds one.
# What the reading cannot vouch for (negated classes, case folding) gives no
# trigger, and that pass always runs: a skipped pass could not have matched.
_LARGEST_CLASS = 10_000


def _needs(items):
    """What a match of a parsed pattern needs: (each of these strings, a character of each of these sets, one branch of each of these)."""
    must, anys, ors = set(), [], []
    run = ""  # characters matched one after the other: a string the text holds
    for op, av in items:
        name, need = str(op), None
        if name == "LITERAL":
            run += chr(av)
            continue
        if run:
            must.add(run)
            run = ""
        if name == "IN":
            chars = _class_chars(av)
            if chars is not None:
                anys.append(chars)
        elif name == "BRANCH":
            ors.append([_needs(branch) for branch in av[1]])
        elif name == "SUBPATTERN" and not av[1] & re.IGNORECASE:
            need = _needs(av[3])
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
            need = _needs(av[2])
        elif name == "ATOMIC_GROUP":
            need = _needs(av)
        elif name == "ASSERT":
            need = _needs(av[1])  # a lookaround that must hold looks at the text too
        # ANY, NOT_LITERAL, ASSERT_NOT, AT, CATEGORY, GROUPREF...: no needs.
        if need is not None:
            must.update(need[0])
            anys += need[1]
            ors += need[2]
    if run:
        must.add(run)
    return must, anys, ors


def _class_chars(items):
    chars = set()
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            chars.add(chr(av))
        elif name == "RANGE" and av[1] - av[0] < _LARGEST_CLASS:
            chars.update(map(chr, range(av[0], av[1] + 1)))
        else:  # NEGATE, CATEGORY (\s), a huge range
            return None
    return frozenset(chars)


def _commonness(strings):
    # Kana and punctuation fill Japanese text, Latin letters and symbols are
    # rare in it; each further character makes a string rarer still.
    return sum((4 if "\u3001" <= s[0] <= "\u30ff" else 2 if "\u4e00" <= s[0] <= "\u9fff" or s[0] in _COMMON_ASCII else 1)
               / 4 ** (len(s) - 1) for s in strings)


_COMMON_ASCII = frozenset("0123456789 .,:/-()!?")


def _trigger(need):
    """The rarest-looking set of strings of which each match holds one, or None."""
    must, anys, ors = need
    options = [{s} for s in must] + list(anys)
    for branches in ors:
        sets = [_trigger(branch) for branch in branches]
        if None not in sets:
            options.append(set().union(*sets))
    return min(options, key=lambda strings: (_commonness(strings), sorted(strings)), default=None)


def _trigger_pattern(pattern):
    if pattern.flags & re.IGNORECASE:
        return None
    try:
        try:
            from re import _parser as sre_parse  # Python 3.11+
        except ImportError:  # pragma: no cover
            import sre_parse
        strings = _trigger(_needs(sre_parse.parse(pattern.pattern, pattern.flags)))
    except Exception:  # pragma: no cover - a parser that changed: always run the pass
        return None
    if not strings:
        return None
    # Single characters as a class of ranges: sre tests a long list of
    # characters one by one.
    codes, ranges = sorted(ord(s) for s in strings if len(s) == 1), []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    branches = sorted(re.escape(s) for s in strings if len(s) > 1)
    if ranges:
        branches.append("[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges) + "]")
    return re.compile("|".join(branches))


# pattern's id -> (pattern, trigger regex or None); by id, as hashing a
# compiled pattern hashes all its code, every time. The contact tools' are
# their heads (below); the others' are read on first use.
_TRIGGERS = {}


def _trigger_of(pattern):
    known = _TRIGGERS.get(id(pattern))
    if known is None or known[0] is not pattern:
        known = _TRIGGERS[id(pattern)] = (pattern, _trigger_pattern(pattern))
    return known[1]


def _may_match(pattern, text):
    """False when ``pattern`` cannot match ``text``: it holds none of the pattern's trigger."""
    trigger = _trigger_of(pattern)
    return trigger is None or trigger.search(text) is not None


def _any_trigger(patterns):
    """One regex for "some pattern of these may match", or None (always look).

    Sound for passes run in turn: if a text holds no trigger of any of
    them, none changes it, so none sees a text that holds one.
    """
    triggers = [_trigger_of(p) for p in patterns]
    return None if None in triggers else re.compile("|".join(t.pattern for t in triggers))


# 1. Invisible and unsafe characters. Format characters (category Cf) and
# variation selectors survive NFKC, and MeCab stops reading at a NUL.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u034f\u061c"
    "\u0600-\u0605\u06dd\u070f\u08e2\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
    "\ufff9-\ufffb\ud800-\udfff\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]+"
)
_LINE_BREAKS = re.compile("\r\n|[\r\x85\u2028\u2029\x0b\x0c]")
_TABS = re.compile("\t")
_SPACING_VOICE = re.compile("[\u309b\u309c]")

# 2. NFKC, but only where it can change something: these characters are
# already in normal form, and whole Japanese sentences are made of them.
_STABLE = "\n\x20-\x7e\u3001\u3002\u300c\u300d\u3041-\u3096\u30a1-\u30fa\u30fc\u4e00-\u9fff"
_COMBINING = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\u3099\u309a\ufe20-\ufe2f"
_UNSTABLE = re.compile(f"[^{_STABLE}][{_COMBINING}]*|[{_STABLE}][{_COMBINING}]+")


def _nfkc(m):
    return _nfkc_text(m.group())


def _nfkc_text(s):
    s = unicodedata.normalize("NFKC", s)
    # Marks NFKC could not compose (a line over a letter, 100k stacked
    # accents) carry nothing a reader needs: drop them.
    return "".join(c for c in s if not unicodedata.combining(c))


_HAS_UNSTABLE = re.compile(f"[^{_STABLE}]")
_HAS_COMBINING = re.compile(f"[{_COMBINING}]")
#: Stands for a character whose NFKC is not one character (normalised text has no NUL).
_NOT_ONE = "\x00"


class _OneForOne(dict):
    """str.translate table: each character to its NFKC if that is one character, else to _NOT_ONE; filled as met
    (and emptied past ``LIMIT`` characters, so that a log of every code point cannot grow it without bound)."""

    LIMIT = 50_000

    def __missing__(self, code):
        if len(self) >= self.LIMIT:
            self.clear()
        s = _nfkc_text(chr(code))
        out = self[code] = s if len(s) == 1 else _NOT_ONE
        return out


_ONE_FOR_ONE = _OneForOne()


def nfkc(norm):
    """Step 2 on a Normalized: NFKC where it can change something, marks it leaves dropped.

    Equal to ``_sub(_UNSTABLE, _nfkc, norm)``; a text whose characters map
    one for one (the common case: full-width punctuation and digits, no
    combining marks) is translated in one call, its offsets unchanged.
    """
    text = norm.text
    if not _HAS_UNSTABLE.search(text):
        return norm
    if "\x00" not in text and not _HAS_COMBINING.search(text):
        out = text.translate(_ONE_FOR_ONE)
        if _NOT_ONE not in out:
            return norm if out == text else Normalized(out, norm.starts, norm.ends, norm.original)
    return _sub(_UNSTABLE, _nfkc, norm)


# 3. Case and look-alikes: one character for one, so offsets are unchanged.
_FOLD = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "АВЕКМНОРСТХаеорсухІіЈјЅѕԚԛԜԝҮүҺһӀӏ"
    "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοντυχειρκ",
    "abcdefghijklmnopqrstuvwxyz"
    "abekmhopctxaeopcyxiijjssqqwwyyhhll"
    "abezhikmnoptyxaovtuxeipk",
)
_HAS_FOLDABLE = re.compile("[A-Z\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]")

# Separators a disguise puts between letters: spaces, dots, dashes, slashes,
# stars, hearts, emoji and the like (not 、。 or letters).
_SEP = (
    r"[\s.\-_・･*/|~〜,'\"`^+=#:;!?()\[\]{}<>"
    "\u2010-\u2015\u2022\u2026\u2190-\u21ff\u2500-\u27bf\u2b00-\u2bff"
    "\u3000\u30fb\U0001f000-\U0001faff]"
)


def _spaced(word):
    """A pattern matching ``word`` with separators allowed between its letters."""
    return f"{_SEP}*".join(word)


# 4. Contact tools, in readings, leet and spacing, to one form each.
_L, _I, _N, _E = "[l1|]", "[i1!|]", "n", "[e3]"
_TOOLS = [
    ("line", [f"{_L}{_SEP}*{_I}{_SEP}*{_N}{_SEP}*{_E}"],
     ["らいん", "えるあいえぬいー", "エルアイエヌイー", "緑のアプリ", "緑色のアプリ", "緑のやつ"],
     ["ライン"]),
    ("gmail", [_spaced("gmail"), "gmai1", "gma1l"], ["じーめーる", "じぃめーる"], ["ジーメール"]),
    ("chatwork", [_spaced("chatwork")], ["ちゃっとわーく", "ちゃとわ"], ["チャットワーク", "チャトワ"]),
    ("discord", [_spaced("discord"), "d1scord"], ["でぃすこーど", "でぃすこ"], ["ディスコード"]),
    ("telegram", [_spaced("telegram")], ["てれぐらむ"], ["テレグラム", "テレグラ"]),
    ("skype", [_spaced("skype")], ["すかいぷ"], ["スカイプ"]),
    ("instagram", [_spaced("instagram")], ["いんすたぐらむ", "いんすた"], ["インスタグラム", "インスタ"]),
    ("whatsapp", [_spaced("whatsapp")], ["わっつあっぷ"], ["ワッツアップ"]),
    ("wechat", [_spaced("wechat")], ["うぃーちゃっと"], ["ウィーチャット"]),
    ("kakaotalk", [_spaced("kakaotalk"), "kakao"], ["かかおとーく"], ["カカオトーク"]),
    ("slack", [_spaced("slack")], ["すらっく"], ["スラック"]),
    ("zoom", [_spaced("zoom"), "z00m"], ["ずーむ"], ["ズーム"]),
]


def _tool_pattern(latin, hiragana, katakana):
    parts = [f"(?<![a-z0-9]){p}(?![a-z0-9])" for p in latin]
    # A short reading inside a run of kana is often part of another word
    # (くらいんだ): unspaced, it must stand after something that is not kana.
    parts += [f"{_SEP}+".join(w) if len(w) <= 3 else _spaced(w) for w in hiragana]
    parts += [f"(?<![\u3041-\u3096]){w}" for w in hiragana if len(w) <= 3]
    # Katakana readings only as a word of their own: オンライン, ガイドライン
    # and ラインナップ are not the app.
    parts += [f"(?<![\u30a1-\u30fa\u30fc]){w}(?![\u30a1-\u30fa\u30fc])" for w in katakana]
    return re.compile("|".join(parts))


_TOOL_PATTERNS = [(name, _tool_pattern(*forms)) for name, *forms in _TOOLS]
#: The one form each contact tool is written in after normalisation.
TOOL_NAMES = tuple(name for name, *_ in _TOOLS)


#: Letters in a contact tool's head: a shorter head is met inside common words (ですか, しちゃった, くらい).
_HEAD_LETTERS = 4


def _tool_heads(latin, hiragana, katakana):
    """The heads every match of ``_tool_pattern(...)`` starts with, or None.

    A head is the first ``_HEAD_LETTERS`` letters of a form (the whole form
    if shorter) with separators allowed between them (らいん, ら い ん and
    ら・い・ん all start with ら{SEP}*い{SEP}*ん); a text with no head cannot
    hold the tool. Each head starts with one character, so that sre can skip
    to the places where one might begin.
    """
    heads = [(w[0], "".join(f"{_SEP}*{re.escape(c)}" for c in w[1:_HEAD_LETTERS])) for w in [*hiragana, *katakana]]
    for form in latin:
        letters = _first_letters(form, _HEAD_LETTERS)
        if letters is None:
            return None
        rest = "".join(f"{_SEP}*[" + "".join(re.escape(c) for c in sorted(chars)) + "]" for chars in letters[1:])
        heads += [(c, rest) for c in sorted(letters[0])]
    return heads


def _heads_pattern(heads):
    """One regex for (first character, rest) heads, a branch per first character: sre tries every branch at
    every place it might start, and a branch whose character is not there fails at once."""
    rests = {}
    for c, rest in heads:
        rests.setdefault(c, set()).add(rest)
    return "|".join(f"{re.escape(c)}(?:{'|'.join(sorted(rests[c]))})" for c in sorted(rests))


def _first_letters(form, k):
    """The characters of each of the first ``k`` letters of a Latin form (all, if fewer), or None if it is
    not letters and separators."""
    try:
        try:
            from re import _parser as sre_parse  # Python 3.11+
        except ImportError:  # pragma: no cover
            import sre_parse
        items = list(sre_parse.parse(form))
        separator = list(sre_parse.parse(_SEP))
    except Exception:  # pragma: no cover
        return None
    letters = []
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            letters.append({chr(av)})
        elif name == "IN" and _class_chars(av):
            letters.append(_class_chars(av))
        elif name == "MAX_REPEAT" and letters and list(av[2]) == separator:
            continue  # separators between letters
        else:
            return None
        if len(letters) == k:
            break
    return letters or None


def _register_tool_heads():
    every = []
    for (name, pattern), (_, *forms) in zip(_TOOL_PATTERNS, _TOOLS):
        heads = _tool_heads(*forms)
        if heads is None:
            return None
        _TRIGGERS[id(pattern)] = (pattern, re.compile(_heads_pattern(heads)))
        every += heads
    return re.compile(_heads_pattern(every))


#: Matches where any contact tool's disguise might start; None: always look.
_ANY_TOOL = _register_tool_heads()

# 5. Single letters or digits split by separators: "a b c 1 2 3", "0.9.0".
_SPLIT_LETTERS = re.compile(
    rf"(?<![a-z0-9])[a-z0-9](?:{_SEP}+[a-z0-9](?![a-z0-9])){{3,}}"
)
_SEP_RE = re.compile(_SEP)

_KANJI_DIGITS = "〇零一二三四五六七八九"
_KANJI_TO_DIGIT = str.maketrans(_KANJI_DIGITS, "00123456789")
_KANJI_NUMBER = re.compile(
    rf"[{_KANJI_DIGITS}](?:(?:{_SEP}|[ーの])*[{_KANJI_DIGITS}]){{3,}}"
)
_KANA_DIGITS = {
    "ぜろ": "0", "ゼロ": "0", "れい": "0", "まる": "0", "いち": "1", "に": "2",
    "さん": "3", "よん": "4", "し": "4", "ご": "5", "ろく": "6", "なな": "7",
    "しち": "7", "はち": "8", "きゅう": "9", "く": "9",
}
_KANA_DIGIT = "|".join(sorted(_KANA_DIGITS, key=len, reverse=True))
# Only a run that starts with zero, as phone numbers do, and is long enough
# that ordinary words (にさん, いちご) cannot form it.
_KANA_NUMBER = re.compile(
    rf"(?:ぜろ|ゼロ|れい|まる)(?:(?:{_SEP}|[ーの])*(?:{_KANA_DIGIT})){{7,}}"
)
_KANA_DIGIT_RE = re.compile(_KANA_DIGIT)

# 6. Handles.
_AT = r"(?:\s*@\s*|\s*[(\[]\s*at\s*[)\]]\s*|\s+at\s+|\s*(?:あっと|アット)(?:まーく|マーク)?\s*)"
_DOT = r"(?:\s*\.\s*|\s*[(\[]\s*dot\s*[)\]]\s*|\s+dot\s+|\s*(?:どっと|ドット)\s*)"
_EMAIL = re.compile(
    rf"(?<![a-z0-9._%+-])[a-z0-9][a-z0-9._%+-]*{_AT}[a-z0-9][a-z0-9-]*(?:{_DOT}[a-z0-9-]+)*{_DOT}[a-z]{{2,6}}(?![a-z0-9])"
)
_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>「」()、。]+"
    r"|(?<![a-z0-9@.])(?:[a-z0-9-]+\.)+(?:com|net|org|jp|io|me|ee|ly|gl|co|info|biz|app|dev|link|xyz|page|site)"
    r"(?![a-z0-9])(?:/[^\s<>「」、。]*)?"
)
_PHONE = re.compile(r"(?<![0-9])(?:\+\s*81|0)(?:[\s\-()・ー.の]{0,3}[0-9]){8,10}(?![0-9])")
_LINE_ID = re.compile(
    r"((?<![a-z])(?:line|id)(?:\s*id)?\s*(?:[:=は]|です|→|->)?\s*)"
    r"(@?[a-z0-9][a-z0-9._-]{2,19})(?![a-z0-9._-])"
)
_HANDLE = re.compile(r"(?<![a-z0-9.])@[a-z0-9_][a-z0-9_.]{2,29}(?![a-z0-9_])")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
PLACEHOLDER_RE = _PLACEHOLDER

# 7. Whitespace.
_SPACES = re.compile(r" {2,}| (?=\n)|(?<=\n) ")
_BLANK_LINES = re.compile(r"\n{3,}")


def _space(m):
    """Runs of spaces become one; spaces next to a line break go."""
    text, a, b = m.string, m.start(), m.end()
    if (b < len(text) and text[b] == "\n") or (a > 0 and text[a - 1] == "\n"):
        return ""
    return " "


def _line_id(m):
    handle = m.group(2)
    # "line for" or "id is" are words; a handle has a digit, a dot, an
    # underscore or a hyphen in it, or stands after an explicit "id".
    if re.search(r"[0-9._-]", handle) or re.search(r"id", m.group(1)):
        return m.group(1) + "<id>"
    return m.group()


# Passes whose computed trigger is a character found everywhere (a digit, a
# dot, a space): a regex that every match contains, written by hand
# (tests/test_speed_paths.py checks each against its pattern).
_BY_HAND = [
    (_SPLIT_LETTERS, rf"[a-z0-9](?:{_SEP}+[a-z0-9]){{3}}"),
    (_KANJI_NUMBER, _KANJI_NUMBER.pattern),
    (_KANA_NUMBER, _KANA_NUMBER.pattern),
    (_URL, r"http|www\.|\.(?:com|net|org|jp|io|me|ee|ly|gl|co|info|biz|app|dev|link|xyz|page|site)"),
    (_PHONE, r"(?:\+\s*81|0)(?:[\s\-()・ー.の]{0,3}[0-9]){8}"),
    (_SPACES, "  | \n|\n "),
    (_BLANK_LINES, "\n\n\n"),
]
for _pattern, _by_hand in _BY_HAND:
    _TRIGGERS[id(_pattern)] = (_pattern, re.compile(_by_hand))

_FIRST = (_LINE_BREAKS, _TABS, _INVISIBLE, _SPACING_VOICE)
# Most messages need none of these passes: one search says so.
_ANY_FIRST = _any_trigger(_FIRST)

#: Steps 5 to 7 as (pattern, replacement, its trigger's search or None): each
#: trigger alone is cheaper than one regex of them all, which sre tries
#: branch by branch at every place in the text.
_LAST = [(pattern, repl, None if _trigger_of(pattern) is None else _trigger_of(pattern).search) for pattern, repl in [
    (_SPLIT_LETTERS, lambda m: _SEP_RE.sub("", m.group())),
    (_KANJI_NUMBER, lambda m: m.group().translate(_KANJI_TO_DIGIT)),
    (_KANA_NUMBER, lambda m: _KANA_DIGIT_RE.sub(lambda d: _KANA_DIGITS[d.group()], m.group())),
    (_EMAIL, "<email>"),
    (_URL, "<url>"),
    (_PHONE, "<phone>"),
    (_LINE_ID, _line_id),
    (_HANDLE, "<handle>"),
    (_SPACES, _space),
    (_BLANK_LINES, "\n\n"),
]]


def normalize(text):
    """Normalise one message, keeping a map to the original offsets.

    Parameters
    ----------
    text : str
        Any Unicode string, lone surrogates included.

    Returns
    -------
    Normalized
        ``.text`` is the normalised text; ``.span(a, b)`` maps a span of it
        back to the original.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize expects str, got {type(text).__name__}")
    n = len(text)
    if n > RAW_LIMIT:
        # Keep memory bounded on 10 MB inputs: read the raw head and tail
        # only; normalisation cannot shrink them below MAX_CHARS in practice.
        half = RAW_LIMIT // 2
        starts = list(range(half)) + [half] + list(range(n - half, n))
        ends = list(range(1, half + 1)) + [n - half] + list(range(n - half + 1, n + 1))
        norm = Normalized(text[:half] + "\n" + text[n - half:], starts, ends, text)
    else:
        norm = Normalized(text, range(n), range(1, n + 1), text)
    if _ANY_FIRST is None or _ANY_FIRST.search(norm.text):
        norm = _sub(_LINE_BREAKS, "\n", norm)
        norm = _sub(_TABS, " ", norm)
        norm = _sub(_INVISIBLE, "", norm)
        norm = _sub(_SPACING_VOICE, lambda m: chr(ord(m.group()) - 2), norm)
    norm = nfkc(norm)
    if len(norm.text) > MAX_CHARS:
        # NFKC can expand a text 18-fold (U+FDFA): cap before the costly passes.
        norm = _head_and_tail(norm)
    if _HAS_FOLDABLE.search(norm.text):
        norm = Normalized(norm.text.translate(_FOLD), norm.starts, norm.ends, text)
    if _ANY_TOOL is None or _ANY_TOOL.search(norm.text):
        for name, pattern in _TOOL_PATTERNS:
            norm = _sub(pattern, name, norm)
    for pattern, repl, may_match in _LAST:
        if may_match is None or may_match(norm.text):
            norm = _replace(pattern, repl, norm)
    norm = _strip(norm)
    if len(norm.text) > MAX_CHARS:
        norm = _head_and_tail(norm)
    return norm


def _strip(norm):
    text = norm.text
    a = len(text) - len(text.lstrip())
    b = len(text.rstrip())
    if a == 0 and b == len(text):
        return norm
    return Normalized(text[a:b], norm.starts[a:b], norm.ends[a:b], norm.original)


def _head_and_tail(norm):
    half = (MAX_CHARS - 1) // 2
    tail = MAX_CHARS - 1 - half
    cut = len(norm.text) - tail
    return Normalized(
        norm.text[:half] + "\n" + norm.text[cut:],
        [*norm.starts[:half], norm.starts[cut], *norm.starts[cut:]],
        [*norm.ends[:half], norm.starts[cut], *norm.ends[cut:]],
        norm.original,
    )


def split_placeholders(text):
    """Split normalised text into (start, end, is_placeholder) pieces."""
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            yield pos, m.start(), False
        yield m.start(), m.end(), True
        pos = m.end()
    if pos < len(text):
        yield pos, len(text), False
