"""Convert an official Co-DETR checkpoint (Sense-X release or MMDetection 3.x port) for codetr.

    python tools/model_converters/codetr_official_to_codetr.py CONFIG SRC DST [--drop-aux]

CONFIG is the codetr config of the same architecture (it names the aux heads that the
official ``rpn_head`` / ``roi_head.i`` / ``bbox_head.j`` indices map to). The result is
checked by loading it strictly into the model built from CONFIG (or, with ``--drop-aux``,
into the same model without aux heads, positive-query generators and adapter, which is all
that inference through the one-to-one branch needs). See
``codetr/models/converters/official.py`` for the renames; a Swin backbone in MMDetection's
layout (the port's Swin-L checkpoints) or the official release's (Sense-X) is renamed by
``codetr/models/converters/swin.py`` on the way, and official ViT-L checkpoints (EVA-02 block
names, RoPE buffers, the EMA hook's ``ema_*`` copies) by ``codetr/models/converters/vit.py``,
for the ``configs/co_dino_vit/`` config they were trained with. ``--skip-mismatched`` leaves
out tensors whose shape differs from the model's (an Objects365 model's class layers for COCO).
"""
from __future__ import annotations

import argparse
import copy
import os.path as osp

import torch
from mmengine.config import Config, DictAction

from codetr.engine.checkpoint import load_checkpoint
from codetr.models.converters import convert_official, drop_aux, is_official_layout
from codetr.registry import MODELS
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Official Co-DETR checkpoint -> codetr')
    parser.add_argument('config', help='codetr config of the checkpoint\'s architecture')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--drop-aux', action='store_true',
                        help='strip aux heads, their positive-query generators and the '
                        'adapter (deployment through the one-to-one branch)')
    parser.add_argument('--no-strict', action='store_true',
                        help='warn about, instead of failing on, keys found on one side only')
    parser.add_argument('--skip-mismatched', action='store_true',
                        help='leave out (and list) tensors whose shape differs from the '
                        'model\'s, e.g. class layers of another dataset')
    parser.add_argument('--aux-head-order', nargs='+',
                        help='the config\'s aux head names in official index order '
                        '(default: RoI heads first, then dense heads)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def _build(cfg: Config, drop: bool) -> torch.nn.Module:
    model_cfg = copy.deepcopy(cfg.model)
    if drop:
        model_cfg.aux_heads, model_cfg.adapter = {}, None
        model_cfg.get('test_cfg', {})['eval_module'] = 'detr'
    return MODELS.build(model_cfg)


def _meta(checkpoint: dict, src: str) -> dict:
    """Class names (``dataset_meta.classes``, or mmdet 2.x ``CLASSES``) and the source."""
    old = checkpoint.get('meta') or {}
    meta = {'converted_from': osp.basename(src)}
    classes = (old.get('dataset_meta') or {}).get('classes') or old.get('CLASSES')
    if classes:
        meta['dataset_meta'] = {'classes': tuple(classes)}
    return meta


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    checkpoint = load_checkpoint(args.src)
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not is_official_layout(state_dict):
        raise SystemExit(f'{args.src} has no official aux-head keys (rpn_head, roi_head.i, '
                         'bbox_head.j, query_head.downsample) and no Swin backbone to rename; '
                         'is it already a codetr file?')
    converted = convert_official(state_dict, _build(cfg, drop=False), args.aux_head_order,
                                 strict=not args.no_strict, skip_mismatched=args.skip_mismatched)
    if args.drop_aux:
        converted = drop_aux(converted)
        _build(cfg, drop=True).load_state_dict(converted, strict=not args.no_strict)
    torch.save({'state_dict': converted, 'meta': _meta(checkpoint, args.src)}, args.dst)
    print(f'wrote {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
