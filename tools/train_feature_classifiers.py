#!/usr/bin/env python
"""Regenerate the shipped MNIST / Fashion-MNIST feature-classifier weights (issue 24).

Trains the default :class:`~dgm_ext.metrics.mnist_net.TrainConfig` classifier of each data set
(seeded, CPU, one thread: a given machine and torch build gives the same bytes every time),
writes ``dgm_ext/metrics/weights/<dataset>-classifier.pt`` and prints each file's sha256,
size and test/val accuracy, plus the ``SHIPPED_SHA256`` lines for
``dgm_ext/metrics/mnist_net.py``. About 5 minutes per data set on one core.

Changing the shipped weights changes every FID/KID/IS computed in these feature spaces:
do it only on purpose, and then update ``SHIPPED_SHA256`` and the recorded results.

Usage::

    python tools/train_feature_classifiers.py                  # both, written in place
    python tools/train_feature_classifiers.py --check          # retrain, compare, write nothing
    python tools/train_feature_classifiers.py --datasets mnist --out /tmp/w

Exit status: 0 done (with ``--check``: every retrained file is byte-identical to the shipped
one), 1 an accuracy below the required floor (nothing written for that data set) or, with
``--check``, a file that differs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

from dgm_ext.metrics import mnist_net

# the floors the shipped classifiers must reach on the 10,000 official test images
REQUIRED_ACCURACY = {"mnist": 0.99, "fashion-mnist": 0.89}
MAX_BYTES = 1_000_000


def main(argv: list[str] | None = None) -> int:
    """Train, check and write (or compare) the shipped weights; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(mnist_net.DATASETS),
                        choices=list(mnist_net.DATASETS))  # fmt: skip
    parser.add_argument("--root", default=None, help="data root (default $DGM_EXT_DATA)")
    parser.add_argument("--out", type=Path, default=mnist_net.WEIGHTS_DIR,
                        help="folder for the weights files (default: the package's)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="training threads (the shipped files: 1)")  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="compare with the shipped files instead of writing")  # fmt: skip
    args = parser.parse_args(argv)

    status = 0
    lines = []
    for dataset in args.datasets:
        t0 = time.perf_counter()
        data, obj = mnist_net.shipped_weights_bytes(dataset, root=args.root, threads=args.threads)
        seconds = time.perf_counter() - t0
        sha = hashlib.sha256(data).hexdigest()
        print(f"{dataset}: sha256 {sha}  {len(data):,} bytes  test accuracy "
              f"{obj['test_accuracy']:.4f}  val accuracy {obj['val_accuracy']:.4f}  "
              f"({seconds:.0f} s, torch {torch.__version__}, {args.threads} threads)")  # fmt: skip
        if obj["test_accuracy"] < REQUIRED_ACCURACY[dataset]:
            print(f"{dataset}: test accuracy {obj['test_accuracy']:.4f} is below the required "
                  f"{REQUIRED_ACCURACY[dataset]}: change the TrainConfig defaults; not written",
                  file=sys.stderr)  # fmt: skip
            status = 1
            continue
        if len(data) >= MAX_BYTES:
            print(f"{dataset}: {len(data):,} bytes, over the {MAX_BYTES:,} limit; not written",
                  file=sys.stderr)  # fmt: skip
            status = 1
            continue
        target = args.out / f"{dataset}-classifier.pt"
        if args.check:
            shipped = target.read_bytes() if target.is_file() else b""
            same = shipped == data
            print(f"{dataset}: {'identical to' if same else 'DIFFERS from'} {target}")
            status = status if same else 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            print(f"{dataset}: wrote {target}")
        lines.append(f'    "{dataset}": "{sha}",')
        if sha != mnist_net.SHIPPED_SHA256.get(dataset):
            print(f"{dataset}: differs from SHIPPED_SHA256 in dgm_ext/metrics/mnist_net.py")
    if lines:
        print("SHIPPED_SHA256: dict[str, str] = {\n" + "\n".join(lines) + "\n}")
    return status


if __name__ == "__main__":
    sys.exit(main())
