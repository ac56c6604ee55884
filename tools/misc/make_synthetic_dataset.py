"""Write the synthetic shapes dataset (COCO format) used by the quick-start configs.

Example::

    python tools/misc/make_synthetic_dataset.py --out data/synthetic --train 512 --val 64 --seed 0

Layout: ``OUT/train/*.png``, ``OUT/val/*.png``, ``OUT/annotations/instances_{train,val}.json``.
The same arguments give byte-identical files.
"""
from __future__ import annotations

import argparse
import sys

from codetr.datasets.synthetic import make_synthetic_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--train', type=int, required=True, help='number of training images')
    parser.add_argument('--val', type=int, required=True, help='number of validation images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--min-size', type=int, default=128, help='shortest image side, px')
    parser.add_argument('--max-size', type=int, default=256, help='longest image side, px')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = make_synthetic_dataset(args.out, args.train, args.val, args.seed,
                                   args.min_size, args.max_size)
    for split, path in files.items():
        print(f'{split}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
