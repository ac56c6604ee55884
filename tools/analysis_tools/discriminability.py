"""Encoder feature discriminability: score maps over the images (Co-DETR Fig. 3) and IoF-IoB
curves of the encoder and the decoder (Fig. 2), for one or more checkpoints.

Example (K = 0 against K = 2, both read with the K = 2 config: the collaborative branch's
weights are not needed)::

    python tools/analysis_tools/discriminability.py \\
        configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py k0/epoch_8.pth k2/epoch_8.pth \\
        --labels "K=0" "K=2" --out-dir work_dirs/discriminability --max-images 64

Writes ``iof_iob.png`` (one curve per checkpoint, encoder and decoder panels),
``score_maps/NNN_<image>.png`` (the image, then ``D(F)`` of each checkpoint over it, GT boxes
outlined) and ``discriminability.json`` (the curves, their AUC and the settings). The
definitions follow the paper and are written out in ``codetr/analysis/discriminability.py``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mmengine.config import Config, DictAction

from codetr.analysis import discriminability as disc
from codetr.analysis.model_inputs import build_model, image_rgb
from codetr.analysis.plots import plot_iof_iob, save_panels
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config of the model (any K: aux weights are unused)')
    parser.add_argument('checkpoints', nargs='+', help='one or more checkpoints to compare')
    parser.add_argument('--labels', nargs='+', help='legend label per checkpoint '
                        '(default: the file names)')
    parser.add_argument('--out-dir', required=True, help='folder for the PNGs and the JSON')
    parser.add_argument('--split', choices=('test', 'val', 'train'), default='test',
                        help='dataset split (read through the test pipeline)')
    parser.add_argument('--max-images', type=int, help='first N images only (default: all)')
    parser.add_argument('--norm', choices=disc.NORMS, default='minmax',
                        help="per-level scaling: 'minmax' or 'max' (paper eq. 7 as written; "
                        'on LayerNorm outputs every score is then near 1)')
    parser.add_argument('--decoder-layer', type=int, default=-1,
                        help='decoder layer whose positive-query attention gives the decoder '
                        'curve (default: the last)')
    parser.add_argument('--no-decoder', action='store_true', help='encoder curves only')
    parser.add_argument('--num-vis', type=int, default=4, help='images drawn as score maps')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.checkpoints):
        parser.error(f'--labels gives {len(args.labels)} labels for '
                     f'{len(args.checkpoints)} checkpoints')
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    labels = args.labels or [Path(c).stem for c in args.checkpoints]
    layer = None if args.no_decoder else args.decoder_layer
    curves, examples = [], []
    for label, checkpoint in zip(labels, args.checkpoints):
        model = build_model(cfg, checkpoint)
        result = disc.analyse(model, cfg, args.split, args.max_images, args.norm, layer,
                              keep_examples=args.num_vis)
        examples.append(result.pop('examples'))
        curves.append(dict(label=label, checkpoint=checkpoint, **result))
        print(f'{label}: encoder AUC {result["encoder"]["auc"]:.4f}' +
              (f', decoder AUC {result["decoder"]["auc"]:.4f}' if 'decoder' in result else ''))
    out_dir = Path(args.out_dir)
    (out_dir / 'score_maps').mkdir(parents=True, exist_ok=True)
    plot_iof_iob(curves, out_dir / 'iof_iob.png')
    maps = draw_score_maps(examples, labels, out_dir / 'score_maps')
    report = dict(config=args.config, split=args.split, norm=args.norm, decoder_layer=layer,
                  curves=curves, score_maps=maps, iof_iob_png=str(out_dir / 'iof_iob.png'))
    (out_dir / 'discriminability.json').write_text(json.dumps(report, indent=1))
    print(f'IoF-IoB curves: {out_dir / "iof_iob.png"}; score maps: {out_dir / "score_maps"}; '
          f'numbers: {out_dir / "discriminability.json"}')
    return report


def draw_score_maps(examples: list[list], labels: list[str], out_dir: Path) -> list[str]:
    """One PNG per image: the image, then each checkpoint's ``D(F)`` over it."""
    paths = []
    for index, per_ckpt in enumerate(zip(*examples)):
        item = per_ckpt[0][0]
        rgb = image_rgb(item)
        panels = [rgb] + [disc.score_overlay(rgb, score) for _, score in per_ckpt]
        name = os.path.splitext(os.path.basename(item['data_samples'].img_path))[0]
        path = out_dir / f'{index:03d}_{name}.png'
        save_panels(panels, ['image', *[f'D(F) {label}' for label in labels]], path,
                    item['data_samples'].gt_instances.bboxes.numpy())
        paths.append(str(path))
    return paths


if __name__ == '__main__':
    main()
