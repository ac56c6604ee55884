"""COCO error breakdown: stacked PR curves C75, C50, Loc, Sim, Oth, BG, FN, overall and per class.

Example::

    python tools/test.py CONFIG CKPT \\
        --cfg-options test_evaluator.outfile_prefix=work_dirs/results   # results.bbox.json
    python tools/analysis_tools/coco_error_analysis.py work_dirs/results.bbox.json \\
        data/coco/annotations/instances_val2017.json --out-dir work_dirs/errors

Writes ``overall-{all,small,medium,large}.png``, ``per_class/<class>-<area>.png`` and
``error_analysis.json`` (the area under each curve, overall and per class). What each curve
forgives is explained in ``codetr/analysis/coco_errors.py``.
"""
from __future__ import annotations

import argparse
import json

from codetr.analysis.coco_errors import DEFAULT_AREAS, check_detections, write_error_analysis


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('predictions', help='COCO result json (a list of image_id, '
                        'category_id, bbox [x, y, w, h], score)')
    parser.add_argument('ann_file', help='COCO annotation json of the same images')
    parser.add_argument('--out-dir', required=True, help='folder for the PNGs and the JSON')
    parser.add_argument('--areas', type=float, nargs=3, default=list(DEFAULT_AREAS),
                        metavar=('SMALL', 'MEDIUM', 'LARGE'),
                        help='upper area limits (px^2) of small, medium and large boxes')
    parser.add_argument('--no-class-plots', action='store_true',
                        help='write the overall PNGs and the JSON only')
    return parser.parse_args(argv)


def _load_json(path: str) -> object:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise SystemExit(f'{path} is not valid JSON: {err}') from err


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    gt = _load_json(args.ann_file)
    if not isinstance(gt, dict) or not all(k in gt for k in ('images', 'annotations',
                                                              'categories')):
        raise SystemExit(f'{args.ann_file} is not a COCO annotation file (it needs images, '
                         f'annotations and categories).')
    dets = check_detections(_load_json(args.predictions), gt, args.predictions)
    summary = write_error_analysis(gt, dets, args.out_dir, args.areas, not args.no_class_plots)
    print('\noverall (all areas): ' + '  '.join(
        f'{t} {v:.3f}' for t, v in summary['overall']['all'].items() if v is not None))
    print(f'Written to {args.out_dir}')
    return summary


if __name__ == '__main__':
    main()
