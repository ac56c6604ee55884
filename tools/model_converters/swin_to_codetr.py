"""Convert a Swin checkpoint (MMDetection / MMPretrain, timm or the original release's layout)
to codetr's ``SwinTransformer`` names.

    python tools/model_converters/swin_to_codetr.py SRC DST [--prefix backbone.]

SRC is an ImageNet classifier or a detector checkpoint (then only the keys under ``--prefix``
are read). DST holds ``{'state_dict': {'backbone.<name>': tensor}}`` for
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` or ``load_from``. The result is checked
by loading it into a ``SwinTransformer`` built from the shapes it holds, and those arguments
are printed for the config. ``init_cfg`` also reads SRC directly (the same map runs on load);
converting once saves the work and shows the architecture. Full official Co-DETR detector
checkpoints go through ``codetr_official_to_codetr.py`` instead.
"""
from __future__ import annotations

import argparse

import torch

from codetr.models.backbones.checkpoint_utils import extract_state_dict, read_checkpoint
from codetr.models.backbones.swin import SwinTransformer
from codetr.models.converters.swin import (
    detect_swin_layout,
    fit_swin_state,
    infer_swin_args,
    swin_to_codetr,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Swin checkpoint -> codetr SwinTransformer')
    parser.add_argument('src', help='Swin checkpoint (.pth), any known layout')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--prefix', default='backbone.',
                        help='read only the keys under this prefix when the file has them')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Convert, check and save; returns the inferred ``SwinTransformer`` arguments."""
    args = parse_args(argv)
    state = extract_state_dict(read_checkpoint(args.src), args.prefix)
    layout = detect_swin_layout(state)
    converted, _, dropped = swin_to_codetr(state, layout)
    swin_args = infer_swin_args(converted)
    model = SwinTransformer(**swin_args)
    model.load_state_dict(fit_swin_state(model, converted, args.src), strict=False)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in converted.items()},
                'meta': {'converted_from': args.src, 'layout': layout}}, args.dst)
    print(f'{args.src}: {layout} layout, {len(converted)} tensors written to {args.dst} '
          f'({len(dropped)} recomputed buffers / classifier tensors left out)')
    print('SwinTransformer arguments: ' + ', '.join(f'{k}={v!r}' for k, v in swin_args.items()))
    return swin_args


if __name__ == '__main__':
    main()
