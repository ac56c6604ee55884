"""Rank images by per-image COCO AP and draw the best and worst ones (GT | predictions).

Example::

    python tools/test.py CONFIG CKPT --out work_dirs/results.pkl
    python tools/analysis_tools/analyze_results.py CONFIG work_dirs/results.pkl \\
        --out-dir work_dirs/analysis --topk 20 --show-score-thr 0.3

Writes ``per_image_ap.json`` (every image, best first: ``img_id``, ``img_path``, ``ap``,
``num_gt``, ``num_pred``), and ``best/`` and ``worst/`` with ``topk`` PNGs each, named
``<rank>_<image name>_ap<AP>.png``: the ground truth left, the predictions scoring at least
``--show-score-thr`` right. The AP is COCOeval's AP@[.50:.95] on that image alone; images
without ground truth have no AP and are listed last.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp

import cv2
from mmengine.config import Config, DictAction
from mmengine.utils import track_iter_progress

from codetr.analysis.common import draw_gt_and_predictions, predictions_with_ground_truth
from codetr.analysis.per_image_ap import per_image_ap, rank_images
from codetr.evaluation import load_det_results
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file (its test dataset gives the ground truth)')
    parser.add_argument('predictions', help='.pkl or .json written by tools/test.py --out')
    parser.add_argument('--out-dir', required=True, help='folder for the PNGs and the JSON')
    parser.add_argument('--topk', type=int, default=20, help='images drawn at each end')
    parser.add_argument('--show-score-thr', type=float, default=0.3,
                        help='draw predictions scoring at least this')
    parser.add_argument('--split', choices=('test', 'val'), default='test')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def _draw(ranked: list, folder: str, records: dict, infos: dict, aps: dict, classes: tuple,
          score_thr: float) -> None:
    os.makedirs(folder, exist_ok=True)
    for rank, img_id in enumerate(track_iter_progress(ranked) if ranked else ranked):
        info = infos[img_id]
        img = cv2.imread(info['img_path'])
        if img is None:
            raise FileNotFoundError(f'Image {info["img_path"]} (img_id {img_id}) cannot be read; '
                                    'check data_root / data_prefix of the test dataset.')
        stem = osp.splitext(osp.basename(info['img_path']))[0]
        drawn = draw_gt_and_predictions(img, info, records[img_id], classes, score_thr,
                                        f'AP {aps[img_id]:.3f}')
        cv2.imwrite(osp.join(folder, f'{rank:03d}_{stem}_ap{aps[img_id]:.3f}.png'), drawn)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    records, infos, classes = predictions_with_ground_truth(
        cfg, load_det_results(args.predictions), args.predictions, args.split)
    aps = per_image_ap(records, infos, classes)
    order = rank_images(aps)
    preds = {r['img_id']: r['pred_instances'] for r in records}
    table = [dict(img_id=i, img_path=infos[i]['img_path'], ap=aps[i],
                  num_gt=sum(not a.get('ignore_flag') for a in infos[i]['instances']),
                  num_pred=int(len(preds[i]['scores']))) for i in order]
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'per_image_ap.json'), 'w') as f:
        json.dump(table, f, indent=1)
    scored = [i for i in order if aps[i] is not None]
    k = min(args.topk, len(scored))
    _draw(scored[:k], osp.join(args.out_dir, 'best'), preds, infos, aps, classes,
          args.show_score_thr)
    _draw(scored[::-1][:k], osp.join(args.out_dir, 'worst'), preds, infos, aps, classes,
          args.show_score_thr)
    print(f'\n{len(scored)} images ranked by AP; {k} best and {k} worst drawn to '
          f'{args.out_dir}/best and /worst; per-image AP in {args.out_dir}/per_image_ap.json')
    return table


if __name__ == '__main__':
    main()
