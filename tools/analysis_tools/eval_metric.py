"""Re-evaluate saved predictions (``tools/test.py --out``) without building the model.

Example::

    python tools/test.py CONFIG CKPT --out work_dirs/results.pkl
    python tools/analysis_tools/eval_metric.py CONFIG work_dirs/results.pkl \\
        --cfg-options test_evaluator.classwise=True

Uses the config's ``test_evaluator`` (``--split val`` for ``val_evaluator``) and its dataset
for the ground truth; change the metric with ``--cfg-options`` (e.g.
``test_evaluator.backend=faster_coco_eval``).
"""
from __future__ import annotations

import argparse
import json

from mmengine.config import Config, DictAction

from codetr.evaluation import evaluate_det_results, load_det_results
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('predictions', help='.pkl or .json written by tools/test.py --out')
    parser.add_argument('--split', choices=('test', 'val'), default='test',
                        help='which <split>_evaluator and dataset to use')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_evaluator.classwise=True')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    records = load_det_results(args.predictions)
    metrics = evaluate_det_results(cfg, records, args.split, source=args.predictions)
    print(json.dumps(metrics, indent=1))
    return metrics


if __name__ == '__main__':
    main()
