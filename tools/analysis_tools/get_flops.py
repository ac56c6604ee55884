"""FLOPs and parameters of a detector's inference path, per component.

Example::

    python tools/analysis_tools/get_flops.py configs/co_dino/co_dino_5scale_r50_8xb2_1x_coco.py \\
        --shape 800 1333

Traces ``model.predict`` on one random ``(1, 3, H, W)`` image (padded as the data
preprocessor pads) with mmengine's ``FlopAnalyzer`` and prints one row per component:
backbone, neck, encoder, decoder, each positive-query generator, the adapter, each aux
head, the rest of the query head and the rest. Aux heads, adapter and positive queries do
not run at inference (``eval_module='detr'``), so they show 0 FLOPs and their parameters.
One FLOP is one multiply-add; element-wise ops, top-k and NMS are not counted. The weights
do not change the count, so no checkpoint is needed.
"""
from __future__ import annotations

import argparse
import json
import sys

from mmengine.config import Config, DictAction

from codetr.analysis.flops import component_flops, flops_table
from codetr.registry import MODELS
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[800, 1333],
                        help='input height and width (one number: a square), default 800 1333')
    parser.add_argument('--out-json', help='also write the table as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.test_cfg.eval_module=one-stage')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) <= 0:
        parser.error(f'--shape takes H [W], positive, got {args.shape}')
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    height, width = args.shape if len(args.shape) == 2 else args.shape * 2
    model = MODELS.build(cfg.model)
    result = component_flops(model, (height, width))
    print(f'Input shape: {tuple(result["input_shape"])}')
    print(flops_table(result))
    print('One FLOP = one multiply-add; element-wise ops, top-k and NMS are not counted.')
    if args.out_json:
        with open(args.out_json, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'Written to {args.out_json}')
    return result


if __name__ == '__main__':
    main()
    sys.exit(0)
