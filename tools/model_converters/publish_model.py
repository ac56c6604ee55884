"""Publish a checkpoint: keep the weights and metadata, name it by its sha256.

Example::

    python tools/model_converters/publish_model.py work_dirs/run/epoch_12.pth \\
        co_dino_r50_coco.pth [--drop-aux]

writes ``co_dino_r50_coco-<first 8 hex digits of its sha256>.pth`` holding ``state_dict``
and ``meta`` only (no optimizer, message hub or scheduler state). ``--drop-aux`` also
removes the aux heads, their positive-query generators and the adapter, which inference
through the one-to-one branch (``eval_module='detr'``) never uses.
"""
from __future__ import annotations

import argparse
import os.path as osp

from codetr.engine.publish import publish_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('in_file', help='checkpoint written by tools/train.py')
    parser.add_argument('out_file', help='output name; the sha256 prefix is added before .pth')
    parser.add_argument('--drop-aux', action='store_true',
                        help='remove the aux heads, positive-query generators and adapter')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    final, removed = publish_checkpoint(args.in_file, args.out_file, args.drop_aux)
    size = osp.getsize(final) / 2 ** 20
    print(f'removed {", ".join(removed) or "nothing"}'
          f'{" and the aux heads" if args.drop_aux else ""}; wrote {final} ({size:.1f} MiB)')
    return final


if __name__ == '__main__':
    main()
