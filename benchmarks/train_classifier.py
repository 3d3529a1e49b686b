"""Train the MNIST classifier shipped as labkit/assets/mnist_classifier.pt.

    python benchmarks/train_classifier.py --data ../shared/data/mnist [--out labkit/assets/mnist_classifier.pt]

Runs the recipe of labkit.evaluation.classifier.train_classifier (3 epochs, AdamW + OneCycle, random
shifts) on the 60k training digits, reports test accuracy and time, saves the state dict and prints its
sha256: paste that into WEIGHTS_SHA256 in labkit/evaluation/classifier.py and into docs/evaluation.md.
Measured on 2 CPU cores: see docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from labkit.data import load_mnist
from labkit.evaluation.classifier import (
    WEIGHTS_PATH,
    ClassifierTrainConfig,
    classifier_accuracy,
    file_sha256,
    train_classifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="MNIST folder (default: LABKIT_DATA or the cache)")
    parser.add_argument("--out", default=str(WEIGHTS_PATH))
    parser.add_argument("--epochs", type=int, default=ClassifierTrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # weight initialisation
    generator = torch.Generator().manual_seed(args.seed)  # shuffling and augmentation

    train, test = load_mnist(args.data, train=True), load_mnist(args.data, train=False)
    to01 = lambda d: (d.images + 1) / 2  # noqa: E731  labkit data is in [-1,1], evaluation in [0,1]
    config = ClassifierTrainConfig(epochs=args.epochs)

    start = time.perf_counter()
    model = train_classifier(to01(train), train.labels, config=config, generator=generator)
    seconds = time.perf_counter() - start

    result = classifier_accuracy(to01(test), test.labels, model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out)
    report = {
        "test_accuracy": result["accuracy"],
        "test_per_digit_accuracy": [round(a, 4) for a in result["per_digit"]["accuracy"]],
        "train_seconds": round(seconds, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "config": config.__dict__,
        "bytes": out.stat().st_size,
        "sha256": file_sha256(out),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
