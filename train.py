"""Train a model on labelled messages: python train.py --data data/ --out models/mine"""

import sys

from classifier.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
