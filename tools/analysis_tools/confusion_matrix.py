"""Confusion matrix of saved predictions (``tools/test.py --out``), with a background class.

Example::

    python tools/test.py CONFIG CKPT --out work_dirs/results.pkl
    python tools/analysis_tools/confusion_matrix.py CONFIG work_dirs/results.pkl \\
        --out-dir work_dirs/confusion --score-thr 0.3 --tp-iou-thr 0.5

Writes ``confusion_matrix.png`` (each ground-truth row in percent), ``.json`` (counts,
percentages, settings) and ``.csv`` (counts). Rows are ground truth, columns predictions;
the last row and column are background (false positives / false negatives), counted as
MMDetection's ``confusion_matrix.py`` counts them (``codetr/analysis/confusion_matrix.py``).
"""
from __future__ import annotations

import argparse
import os

from mmengine.config import Config, DictAction

from codetr.analysis.common import predictions_with_ground_truth
from codetr.analysis.confusion_matrix import confusion_matrix, save_confusion_matrix
from codetr.evaluation import load_det_results
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file (its test dataset gives the ground truth)')
    parser.add_argument('predictions', help='.pkl or .json written by tools/test.py --out')
    parser.add_argument('--out-dir', required=True, help='folder for the PNG, JSON and CSV')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections scoring below this are left out')
    parser.add_argument('--tp-iou-thr', type=float, default=0.5,
                        help='IoU at which a detection matches a ground-truth box')
    parser.add_argument('--nms-iou-thr', type=float, default=None,
                        help='per-class NMS at this IoU before matching (default: none)')
    parser.add_argument('--color-theme', default='plasma', help='matplotlib colour map')
    parser.add_argument('--split', choices=('test', 'val'), default='test')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, str]:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    records, infos, classes = predictions_with_ground_truth(
        cfg, load_det_results(args.predictions), args.predictions, args.split)
    matrix = confusion_matrix(records, infos, len(classes), args.score_thr, args.tp_iou_thr,
                              args.nms_iou_thr)
    os.makedirs(args.out_dir, exist_ok=True)
    settings = dict(score_thr=args.score_thr, tp_iou_thr=args.tp_iou_thr,
                    nms_iou_thr=args.nms_iou_thr, num_images=len(records))
    paths = save_confusion_matrix(matrix, classes, args.out_dir, settings, args.color_theme)
    print(f'\nConfusion matrix of {len(records)} images written to {", ".join(paths.values())}')
    return paths


if __name__ == '__main__':
    main()
