"""A keyword list beside the model, on the same labelled sets (a floor the model must beat).

    python bench/keyword_baseline.py [--model DIR]

The list is the kind a platform would start with (tools, contact words,
"everyone does it" phrases): a message is flagged off_platform when it holds
one of OFF_PLATFORM, peer_pressure when it holds one of PEER_PRESSURE, after
NFKC and lower-casing. Prints precision, recall and F1 per label for both,
on the written test part, each independent check (`data/eval/*.jsonl`), and the share of held-out
real chat flagged.
"""

import argparse
import sys
import unicodedata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OFF_PLATFORM = ["line", "ライン", "らいん", "メール", "mail", "アドレス", "電話", "番号", "zoom", "chatwork", "チャットワーク",
                "discord", "telegram", "skype", "instagram", "インスタ", "dm", "直接", "外部", "連絡先", "id", "@", "http",
                "振込", "口座", "paypal", "qr", "グループ", "友だち追加"]
PEER_PRESSURE = ["みんな", "皆さん", "他の方", "他の人", "他のライター", "問題ない", "問題ありません", "大丈夫", "規約",
                 "契約済み", "普通"]


def keyword_flags(texts):
    out = np.zeros((len(texts), 2), dtype=bool)
    for i, t in enumerate(texts):
        t = unicodedata.normalize("NFKC", t).lower()
        out[i, 0] = any(k in t for k in OFF_PLATFORM)
        out[i, 1] = any(k in t for k in PEER_PRESSURE)
    return out


def prf(y, f):
    tp, fp, fn = int((f & (y == 1)).sum()), int((f & (y == 0)).sum()), int((~f & (y == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main(argv=None):
    import classifier
    from classifier.data import load_labelled

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    args = parser.parse_args(argv)
    model = classifier.load(args.model)
    cut = np.array([model.thresholds[k] for k in classifier.LABELS])
    sets = {"written test part": load_labelled([ROOT / "data"], part="test")[0],
            **{f"independent check `{path.name}`": load_labelled([path])[0]
               for path in sorted((ROOT / "data" / "eval").glob("*.jsonl"))}}
    print("| set | label | model P / R / F1 | keyword list P / R / F1 |\n|---|---|---|---|")
    for name, rows in sets.items():
        texts = [r["text"] for r in rows]
        flags = model.predict_proba(texts) >= cut
        kw = keyword_flags(texts)
        for k, label in enumerate(classifier.LABELS):
            y = np.array([r[label] for r in rows])
            m, b = prf(y, flags[:, k]), prf(y, kw[:, k])
            print(f"| {name} | {label} | {m[0]:.2f} / {m[1]:.2f} / {m[2]:.2f} | {b[0]:.2f} / {b[1]:.2f} / {b[2]:.2f} |")
    real = load_labelled([ROOT / "data"], part="heldout")[0]
    texts = [r["text"] for r in real]
    print(f"\nheld-out real chat ({len(texts)} lines) flagged: model {(model.predict_proba(texts) >= cut).any(axis=1).mean():.2%}, "
          f"keyword list {keyword_flags(texts).any(axis=1).mean():.2%}")


if __name__ == "__main__":
    main()
