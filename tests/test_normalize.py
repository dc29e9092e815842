import pytest

from classifier.normalize import MAX_CHARS, normalize

DISGUISES = [
    ("ら い ん で話しましょう", "line"),
    ("ﾗｲﾝで話しましょう", "line"),
    ("L1NE交換しませんか", "line"),
    ("ＬＩＮＥで", "line"),
    ("L I N E で", "line"),
    ("L.I.N.Eで", "line"),
    ("L🌟I🌟N🌟Eで", "line"),
    ("L\u200bI\u200cN\u200dEで", "line"),
    ("LІNЕで", "line"),  # Cyrillic І and Е
    ("えるあいえぬいーで", "line"),
    ("緑のアプリで", "line"),
    ("じーめーるに送って", "gmail"),
    ("ちゃっとわーくに招待します", "chatwork"),
    ("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ", "<email>"),
    ("taro at example dot com", "<email>"),
    ("taro(at)example.com", "<email>"),
    ("taroあっとexampleどっとcom", "<email>"),
    ("０９０－００００－１２３４", "<phone>"),
    ("090 0000 1234", "<phone>"),
    ("〇九〇の〇〇〇〇の一二三四", "<phone>"),
    ("ぜろきゅうぜろ ぜろぜろぜろぜろ いちにさんよん", "<phone>"),
    ("https://lin.ee/abcdEFG", "<url>"),
    ("example.com/form に登録", "<url>"),
    ("IDは taro_0000 です", "<id>"),
    ("@taro_99 で検索", "<handle>"),
]


@pytest.mark.parametrize("text, expected", DISGUISES, ids=[d[0] for d in DISGUISES])
def test_disguises_are_undone(text, expected):
    assert expected in normalize(text).text


@pytest.mark.parametrize("text", ["オンラインで打ち合わせ", "ガイドラインに沿って", "ラインナップを確認", "一二月に", "いちごを食べた"])
def test_words_that_look_like_tools_stay(text):
    n = normalize(text).text
    assert "line" not in n and "<phone>" not in n


def test_offsets_point_into_the_original():
    text = "ご連絡は ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ まで"
    n = normalize(text)
    i = n.text.index("<email>")
    start, end = n.span(i, i + len("<email>"))
    assert text[start:end] == "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ"


def test_voicing_mark_joins():
    assert normalize("か゛んは゛ります").text == "がんばります"


def test_invisible_and_control_characters_go():
    assert normalize("abc\x00LINE\u202eで\ufe0f").text == "abclineで"


def test_lone_surrogate_is_dropped():
    assert normalize("\ud800テスト\udfff").text == "テスト"


def test_expansion_is_capped_after_normalising():
    n = normalize("\ufdfa" * 100_000)
    assert len(n.text) <= MAX_CHARS


def test_head_and_tail_kept():
    text = "LINEで" + "あ" * 300_000 + "連絡はtaro@example.com"
    n = normalize(text).text
    assert n.startswith("line") and n.endswith("<email>")


def test_not_a_string():
    with pytest.raises(TypeError, match="normalize expects str, got bytes"):
        normalize(b"abc")
