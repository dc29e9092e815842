import json
from pathlib import Path

import pytest

import classifier

ROOT = Path(__file__).resolve().parent.parent

# Real client quotes cited in the seed article (a worker quoting a client on
# CrowdWorks「みんなのお仕事相談所」), labelled by LABELING.md. Quoted, never
# trained on: each is flagged read alone. The last two (an excuse after a
# denial, the request system rationalised as fee protection) were missed
# until slices q–t wrote their patterns, in other words (data/README.md).
SEED_QUOTES = {
    "他の人はもう仕事を始めている。": ("peer_pressure",),
    "もう契約済みだから問題は無い。": ("peer_pressure",),
    "操作を間違えた、クラウドワークスに修正をお願いしているが返信がない。": ("peer_pressure",),
    "サービス外連絡申請はクラウドワークス以外で別途契約が結ばれて直接雇用するとクラウドワークスに手数料が入らないからこのようにしている。": ("peer_pressure",),
}

# Ordinary on-platform messages, written for these tests.
ON_PLATFORM = [
    "納品物を確認しました。修正点はありません。検収完了にします。",
    "仮払いが完了しましたので、作業を開始してください。",
    "記事の構成案を添付します。ご確認よろしくお願いします。",
    "LINEスタンプ8個の追加制作をお願いできますか？",
    "メルマガの原稿は金曜日までにこちらのメッセージでお送りください。",
    "サービス外連絡申請を出しました。承認されるまではこちらでやり取りさせてください。",
    "明日の正午までにお願いします。",
]


@pytest.fixture(scope="session")
def model():
    return classifier.load()


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def read_jsonl(path_or_text):
    text = Path(path_or_text).read_text(encoding="utf-8") if isinstance(path_or_text, Path) else path_or_text
    return [json.loads(line) for line in text.split("\n") if line.strip()]
