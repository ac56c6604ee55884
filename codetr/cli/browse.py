"""Draw a dataset's ground truth AFTER its pipeline, one PNG per sample.

Example::

    codetr-browse quickstart/xxx.py --output-dir work_dirs/browse --max-images 20 --phase train

``tools/analysis_tools/browse_dataset.py`` in a clone is the same command. CONFIG is a file,
a path under the configs folder or a short name (:func:`codetr.utils.resolve_config`).

Boxes are drawn on the image the model would receive (after flips, resizes and crops), so
a box off its object points at a transform or annotation bug. Images are named
``<index>_<image file stem>.png``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

import cv2
import numpy as np
from mmengine.config import Config, DictAction

from codetr.cli.utils import CONFIG_HELP, command_name, load_config
from codetr.registry import DATASETS
from codetr.utils import register_all_modules
from codetr.utils.progress import track
from codetr.visualization import draw_boxes

PHASES = ('train', 'val', 'test')
PROG = command_name('codetr-browse', 'tools/analysis_tools/browse_dataset.py')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument('config', help=CONFIG_HELP)
    parser.add_argument('--output-dir', required=True, help='folder for the PNG files')
    parser.add_argument('--max-images', type=int, default=50, help='samples to draw')
    parser.add_argument('--phase', choices=PHASES, default='train',
                        help='which <phase>_dataloader.dataset to browse')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_dataloader.dataset.ann_file=x')
    return parser.parse_args(argv)


def build_dataset(cfg: Config, phase: str):
    """The ``<phase>_dataloader.dataset`` of a config, with its pipeline."""
    key = f'{phase}_dataloader'
    if cfg.get(key) is None or 'dataset' not in cfg[key]:
        raise KeyError(f'The config has no {key}.dataset; choose another --phase.')
    return DATASETS.build(cfg[key]['dataset'])


def draw_sample(item: dict, classes: tuple[str, ...]) -> np.ndarray:
    """``(H, W, 3)`` BGR uint8 image with the GT boxes of one pipeline output drawn.

    ``item['inputs']`` is PackDetInputs' ``(3, H, W)`` uint8 BGR tensor; the boxes in
    ``data_samples.gt_instances`` are in the same pixels.
    """
    img = item['inputs'].permute(1, 2, 0).numpy()
    gt = item['data_samples'].gt_instances
    return draw_boxes(img, gt.bboxes, gt.labels, classes)


def browse(dataset, output_dir: str, max_images: int) -> list[str]:
    """Write up to ``max_images`` drawn samples; returns the written paths."""
    os.makedirs(output_dir, exist_ok=True)
    classes = tuple(dataset.metainfo['classes'])
    paths = []
    for index in track(range(min(max_images, len(dataset))), 'browse', unit='images'):
        item = dataset[index]
        img_path = item['data_samples'].metainfo.get('img_path', f'{index}')
        stem = osp.splitext(osp.basename(img_path))[0]
        path = osp.join(output_dir, f'{index:05d}_{stem}.png')
        if not cv2.imwrite(path, draw_sample(item, classes)):
            raise OSError(f'Could not write {path}.')
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    register_all_modules()
    cfg = load_config(args.config, PROG)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    paths = browse(build_dataset(cfg, args.phase), args.output_dir, args.max_images)
    print(f'{len(paths)} images written to {args.output_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
