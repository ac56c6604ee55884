"""Detect objects in images and save the drawn predictions and their JSON.

    codetr-infer IMAGES CONFIG --weights CKPT [--out-dir outputs]
                 [--device cpu] [--pred-score-thr 0.3] [--batch-size 1]

``demo/image_demo.py`` in a clone is the same command. IMAGES is an image file, a folder of
images or a glob pattern (quote it); CONFIG a file, a path under the configs folder or a
short name (:func:`codetr.utils.resolve_config`). Writes
``OUT_DIR/vis/<name>.png`` and ``OUT_DIR/preds/<name>.json``; class names come from the
checkpoint's metadata (saved by ``codetr-train``).
"""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

from codetr.cli.utils import CONFIG_HELP, add_cwd_to_sys_path, command_name, fail
from codetr.utils.config_path import AmbiguousConfigError, resolve_config

PROG = command_name('codetr-infer', 'demo/image_demo.py')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description='codetr image demo')
    parser.add_argument('inputs', help='an image file, a folder of images or a glob pattern')
    parser.add_argument('model', help=CONFIG_HELP)
    parser.add_argument('--weights', help='checkpoint file (without it: untrained weights)')
    parser.add_argument('--out-dir', default='outputs', help='where vis/ and preds/ go')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='draw predictions scoring at least this')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument('--no-save-vis', action='store_true', help='do not write vis/')
    parser.add_argument('--no-save-pred', action='store_true', help='do not write preds/')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.test_cfg.query_head.'
                        'max_per_img=100')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from codetr.apis import DetInferencer
    from codetr.engine.checkpoint import CheckpointError

    add_cwd_to_sys_path()
    try:
        config = resolve_config(args.model)
        inferencer = DetInferencer(config, args.weights, device=args.device,
                                   cfg_options=args.cfg_options)
        results = inferencer(args.inputs, out_dir=args.out_dir,
                             pred_score_thr=args.pred_score_thr, batch_size=args.batch_size,
                             no_save_vis=args.no_save_vis, no_save_pred=args.no_save_pred)
    except (CheckpointError, FileNotFoundError, AmbiguousConfigError) as err:
        fail(PROG, str(err))
    print(f'{len(results["predictions"])} image(s); results in {args.out_dir}/')


if __name__ == '__main__':
    main()
