"""Agreement of a Co-DETR's branches on the shared encoder: cosine similarity of their
gradients (on the encoder output and its parameters) and KL distances of their Grad-CAMs
(the paper's optimisation-conflict analysis, Fig. 6, 8, 9).

Example::

    python tools/analysis_tools/head_conflict.py CONFIG CHECKPOINT \\
        --out-dir work_dirs/head_conflict --max-images 64

Branches: ``detr`` (the one-to-one head), each aux head ``NAME`` and its positive queries
``NAME.pos``. Writes ``head_conflict.png`` (mean gradient cosine on the encoder output and
on its parameters, mean CAM KL with each branch's distance S_i), ``cams/NNN_<image>.png``
(each branch's CAM over the image) and ``head_conflict.json``. Definitions:
``codetr/analysis/head_conflict.py``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from mmengine.config import Config, DictAction

from codetr.analysis import head_conflict as hc
from codetr.analysis.discriminability import normalise, score_overlay
from codetr.analysis.model_inputs import build_model, image_rgb
from codetr.analysis.plots import plot_matrices, save_panels
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config of the model, with its aux heads')
    parser.add_argument('checkpoint', help='checkpoint to analyse')
    parser.add_argument('--out-dir', required=True, help='folder for the PNGs and the JSON')
    parser.add_argument('--split', choices=('test', 'val', 'train'), default='test',
                        help='dataset split (read through the test pipeline)')
    parser.add_argument('--max-images', type=int, help='first N images only (default: all)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the losses\' sampling (image i uses seed + i)')
    parser.add_argument('--num-vis', type=int, default=4, help='images drawn with their CAMs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = build_model(cfg, args.checkpoint)
    if not len(model.aux_heads):
        print('the model has no aux head (K = 0): only the one-to-one branch is compared')
    result = hc.analyse(model, cfg, args.split, args.max_images, args.seed, args.num_vis)
    examples = result.pop('examples')
    out_dir = Path(args.out_dir)
    (out_dir / 'cams').mkdir(parents=True, exist_ok=True)
    names = result['branches']
    distance = ', '.join(f'{n} {result["head_distance"][n]:.4g}' for n in names)
    plot_matrices(names, [
        ('gradient cosine, encoder output', np.array(result['memory_cosine']['mean']),
         'coolwarm'),
        ('gradient cosine, encoder parameters', np.array(result['param_cosine']['mean']),
         'coolwarm'),
        (f'CAM KL(row || column)\nS_i: {distance}', np.array(result['cam_kl']), 'viridis'),
    ], out_dir / 'head_conflict.png')
    cams = []
    for index, (item, maps) in enumerate(examples):
        rgb = image_rgb(item)
        name = os.path.splitext(os.path.basename(item['data_samples'].img_path))[0]
        path = out_dir / 'cams' / f'{index:03d}_{name}.png'
        save_panels([rgb] + [score_overlay(rgb, normalise(m)) for m in maps],
                    ['image', *[f'CAM {n}' for n in names]], path,
                    item['data_samples'].gt_instances.bboxes.numpy())
        cams.append(str(path))
    report = dict(config=args.config, checkpoint=args.checkpoint, split=args.split,
                  seed=args.seed, **result, cams=cams, png=str(out_dir / 'head_conflict.png'))
    (out_dir / 'head_conflict.json').write_text(json.dumps(report, indent=1))
    with np.printoptions(precision=3, suppress=True):
        print(f'branches {names} over {result["images"]} images\ngradient cosine on the '
              f'encoder output:\n{np.array(result["memory_cosine"]["mean"])}\nCAM KL:\n'
              f'{np.array(result["cam_kl"])}\nS_i: {distance}')
    print(f'written: {out_dir / "head_conflict.png"}, {out_dir / "head_conflict.json"}')
    return report


if __name__ == '__main__':
    main()
