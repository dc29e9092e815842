import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import classifier
from classifier.data import DataError, load_labelled
from classifier.training import train
from conftest import ROOT, write_jsonl

SMALL_GRID = {"clf__C": [4.0], "features__char_ngram_range": [(1, 3)], "clf__class_weight": ["balanced"]}

# A small foreign labelled set, as a moderator team might bring.
FOREIGN = [
    ("LINEでやり取りしましょう、IDはtaro_01です", 1, 0),
    ("連絡先はhanako@example.comです。こちらに直接ご連絡ください", 1, 0),
    ("手数料がもったいないので直接契約にしませんか", 1, 0),
    ("電話番号090-0000-1111に連絡ください", 1, 0),
    ("Chatworkに招待するのでそちらで", 1, 0),
    ("ディスコードのサーバーに入ってください", 1, 0),
    ("Zoomのリンク送るので参加して https://example.com/j/1", 1, 0),
    ("外部のフォームに登録お願いします https://example.com/form", 1, 0),
    ("個人のメールで納品してもらえますか", 1, 0),
    ("銀行振込で直接お支払いします", 1, 0),
    ("Telegramで続きを話しましょう", 1, 0),
    ("インスタのDMに来てください", 1, 0),
    ("みんなやってることなので大丈夫です", 0, 1),
    ("他のライターさんはもう始めていますよ", 0, 1),
    ("規約上問題ないので気にしないでください", 0, 1),
    ("事務局には話を通してありますので", 0, 1),
    ("ほとんどの人が了承済みです", 0, 1),
    ("承認なんて形だけですから", 0, 1),
    ("あなた以外はもう全員終わっています", 0, 1),
    ("他のデザイナーさんはこの単価で受けてくれました", 0, 1),
    ("申請は運営が儲けたいだけの仕組みです", 0, 1),
    ("どこでも普通のことですよ", 0, 1),
    ("みんなLINEでやってるからIDください", 1, 1),
    ("他の人もメールでやり取りしてるので問題ありません", 1, 1),
    ("納品ありがとうございました", 0, 0),
    ("修正をお願いします", 0, 0),
    ("LINEスタンプの制作をお願いします", 0, 0),
    ("メルマガの原稿を書いてください", 0, 0),
    ("明日までにお願いします", 0, 0),
    ("仮払いしました", 0, 0),
    ("サービス外連絡申請をしました。承認をお待ちください", 0, 0),
    ("外部での連絡はできません", 0, 0),
    ("皆様にお送りしています", 0, 0),
    ("他のライターさんの記事も参考にしてください", 0, 0),
    ("テレアポの台本を作ってください", 0, 0),
    ("Zoomの操作マニュアルを作成してください", 0, 0),
    ("検収しました、ありがとうございます", 0, 0),
    ("構成案を確認しました", 0, 0),
    ("急ぎでお願いします", 0, 0),
    ("審査には2営業日ほどかかります", 0, 0),
    ("よろしくお願いいたします", 0, 0),
    ("評価をつけました", 0, 0),
    ("画像を添付します", 0, 0),
    ("文字数は3000字でお願いします", 0, 0),
]


def _foreign_csv(path):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "off_platform", "peer_pressure"])
        for i, (text, op, pp) in enumerate(FOREIGN):
            w.writerow([f"f{i}", text, op, pp])
    return path


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign")
    data = _foreign_csv(d / "labels.csv")
    out = d / "model"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(data), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_train_py_on_a_foreign_csv_gives_a_loadable_model(foreign_model):
    out, stdout = foreign_model
    assert "off_platform" in stdout and "peer_pressure" in stdout
    m = classifier.load(out)
    assert set(m.score("LINEのIDを教えてください")) >= {"off_platform", "flagged", "evidence"}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for key in ("thresholds", "cv", "data", "model_sha256", "versions", "seed", "created", "canaries"):
        assert key in manifest
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith("# Model card")
    # Short messages are scored apart too, out of fold, at the same thresholds.
    short = manifest["cv"]["short"]
    assert short["rows"] == sum(len(t) <= short["max_chars"] for t, _, _ in FOREIGN) > 0
    assert short["metrics"]["off_platform"]["n"] == short["rows"]
    assert f"at most {short['max_chars']} characters ({short['rows']})" in card


def test_existing_out_is_refused_without_force(foreign_model, tmp_path):
    out, _ = foreign_model
    data = _foreign_csv(tmp_path / "labels.csv")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(data), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--force" in proc.stderr
    classifier.load(out)  # untouched


def test_same_data_and_seed_give_the_same_predictions(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "off_platform": a, "peer_pressure": b} for t, a, b in FOREIGN])
    texts = [t for t, _, _ in FOREIGN] + ["LINE交換しよ", "みんなそうしてる"]
    preds = []
    for name in ("a", "b"):
        train([data], tmp_path / name, seed=3, grid=SMALL_GRID, progress=False)
        preds.append(classifier.load(tmp_path / name).predict_proba(texts))
    assert np.array_equal(preds[0], preds[1])


BAD_FILES = [
    ("", "no rows"),
    ('{"text": "a", "off_platform": 1}\n', "missing label 'peer_pressure'"),
    ('{"text": "a", "off_platform": "1", "peer_pressure": 0}\n', "label 'off_platform' is '1'"),
    ('{"text": "a", "off_platform": true, "peer_pressure": 0}\n', "label 'off_platform' is True"),
    ('{"text": "a", "off_platform": 2, "peer_pressure": 0}\n', "label 'off_platform' is 2"),
    ('{"off_platform": 0, "peer_pressure": 0}\n', "'text' is missing"),
    ("not json\n", "not JSON"),
    ('["a list"]\n', "expected a JSON object, got list"),
]


@pytest.mark.parametrize("content, message", BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_bad_data_names_file_line_and_reason(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)) as exc:
        load_labelled([path])
    assert str(exc.value).startswith(str(path))


def test_non_utf8_is_refused(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"text": "caf\xe9", "off_platform": 0, "peer_pressure": 0}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_labelled([path])


def test_conflicting_duplicates_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"text": "LINEで", "off_platform": 1, "peer_pressure": 0},
        {"text": "ＬＩＮＥで", "off_platform": 0, "peer_pressure": 0},
    ])
    with pytest.raises(DataError, match=r"d.jsonl:2: same text as .*d.jsonl:1 with other labels"):
        load_labelled([path])


def test_duplicates_are_dropped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "LINEで", "off_platform": 1, "peer_pressure": 0}] * 3)
    rows, report = load_labelled([path])
    assert len(rows) == 1 and report["duplicates"] == 2


def test_a_label_with_one_class_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "off_platform": a, "peer_pressure": 0} for t, a, _ in FOREIGN])
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(path), "--out", str(tmp_path / "m"), "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "peer_pressure: 0 positives" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_training_checks_its_data_before_it_starts(tmp_path):
    import time

    (tmp_path / "written").mkdir()
    write_jsonl(tmp_path / "written" / "one_writer.jsonl",
                [{"text": t, "off_platform": a, "peer_pressure": b, "source": "written:one_writer"} for t, a, b in FOREIGN])
    started = time.monotonic()
    with pytest.raises(DataError, match="writer groups in the data, fewer than the 5 folds"):
        train([tmp_path], tmp_path / "m", progress=False)
    assert time.monotonic() - started < 30 and not (tmp_path / "m").exists()


def test_an_unwritable_output_is_refused_before_training(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "off_platform": a, "peer_pressure": b} for t, a, b in FOREIGN])
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot write the model beside"):
        train([data], blocker / "model", progress=False)
