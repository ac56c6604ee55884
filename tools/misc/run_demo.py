"""The quick-start job: train a small Co-DINO on the synthetic shapes, evaluate it, draw its
predictions and plot its training curves.

    python tools/misc/make_synthetic_dataset.py --out data/synthetic --train 640 --val 64 \\
        --min-size 128 --max-size 160
    python tools/misc/run_demo.py [--config CFG] [--work-dir DIR] [--data-root DIR] \\
        [--num-images 6] [--score-thr 0.3] [--cfg-options KEY=VALUE ...]

``make demo`` runs both. Training prints an iteration line with its ETA every few iterations
and the COCO AP table after every epoch; evaluation shows a progress bar (the
``EvalProgressHook`` of the default runtime). Everything goes to
``--work-dir``:

* ``epoch_N.pth``: the last checkpoint; ``<timestamp>/``: logs and ``vis_data/scalars.json``;
* ``predictions/NNN_<image>.png``: ground truth (left) next to the predictions (right);
* ``curves.png``: the loss of every branch per iteration and box AP / AP50 per epoch.

The last lines printed are ``Demo box AP ...`` with the final COCO numbers (and
``Demo mask AP ...`` when the config evaluates ``segm``), and the paths.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time
from collections import defaultdict

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)  # for tools.analysis_tools when run as a script

from codetr.cpu_runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()  # before torch loads (codetr/cpu_runtime.py)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from codetr.visualization.training_curves import branch_of  # noqa: E402
from tools.analysis_tools.analyze_logs import load_log, plt  # noqa: E402

DEFAULT_CONFIG = 'configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py'
AP_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50')
MASK_AP_KEYS = ('coco/segm_mAP', 'coco/segm_mAP_50')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train, evaluate, draw and plot a quick-start '
                                     'Co-DINO on the synthetic shapes')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='quick-start config')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='where checkpoints, logs, drawings and curves go')
    parser.add_argument('--data-root', help='a synthetic set other than the config\'s '
                        '(the folder holding annotations/, train/ and val/)')
    parser.add_argument('--num-images', type=int, default=6,
                        help='number of validation images to draw')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw predictions scoring at least this')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    return parser.parse_args(argv)


def build_cfg(args: argparse.Namespace) -> Config:
    """The config with the command-line overrides, after checking that its data exist."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir
    if args.data_root is not None:
        set_data_root(cfg, args.data_root)
    for loader in ('train_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        ann_file = osp.join(dataset.get('data_root', ''), dataset.ann_file)
        if not osp.isfile(ann_file):
            raise SystemExit(
                f'run_demo: {ann_file} does not exist. Write the synthetic set first, e.g.\n'
                f'  python tools/misc/make_synthetic_dataset.py --out {dataset.data_root} '
                '--train 640 --val 64 --min-size 128 --max-size 160\n(or run `make demo`).')
    return cfg


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point the three data loaders and both evaluators at ``data_root`` (in place)."""
    data_root = osp.join(data_root, '')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = data_root + 'annotations/instances_val.json'


def draw_predictions(runner: Runner, out_dir: str, num_images: int,
                     score_thr: float) -> list[str]:
    """Ground truth next to the predictions (score >= ``score_thr``) of the first
    ``num_images`` test images, as PNGs in ``out_dir``; returns their paths."""
    from codetr.visualization import draw_instances

    loader = runner.test_dataloader
    classes = loader.dataset.metainfo['classes']
    model = runner.model
    model.eval()
    paths: list[str] = []
    with torch.no_grad():
        for batch in loader:
            for sample in model.test_step(batch):
                if len(paths) == num_images:
                    return paths
                img = cv2.imread(sample.img_path)
                gt = sample.gt_instances  # original-image pixels: the test pipeline loads
                pred = sample.pred_instances  # boxes after Resize; predictions are rescaled
                pred = pred[pred.scores >= score_thr]
                left = draw_instances(img, gt, classes)  # masks too, when there are any
                right = draw_instances(img, pred, classes, scores=pred.scores)
                gap = np.full((img.shape[0], 4, 3), 255, np.uint8)
                name = osp.splitext(osp.basename(sample.img_path))[0]
                path = osp.join(out_dir, f'{len(paths):03d}_{name}.png')
                cv2.imwrite(path, np.concatenate([left, gap, right], axis=1))
                paths.append(path)
    return paths


def plot_curves(scalars_path: str, out: str) -> str:
    """Two panels: each branch's loss per iteration, box (and mask) AP / AP50 per epoch;
    saved at ``out``."""
    series = load_log(scalars_path)
    totals: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for key, points in series.items():
        branch = branch_of(key)
        for x, value in points if branch else ():
            totals[branch][x] += value
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(12, 4.5))
    for branch, points in totals.items():
        xs = sorted(points)
        ax_loss.plot(xs, [points[x] for x in xs], marker='.' if len(xs) < 20 else None,
                     label=branch)
    ax_loss.set(xlabel='iteration', ylabel='loss (sum over the branch)', title='training loss')
    ax_loss.legend(fontsize='small')
    for key in AP_KEYS + MASK_AP_KEYS:
        if key in series:
            xs, ys = zip(*series[key])
            ax_ap.plot(xs, ys, marker='o', label=key.split('/')[-1])
    ax_ap.set(xlabel='epoch', ylabel='COCO AP', title='validation AP', ylim=(0, 1))
    ax_ap.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def ap_lines(metrics: dict, num_images: int, minutes: float) -> list[str]:
    """``Demo box AP ...`` and, when the config evaluates ``segm``, ``Demo mask AP ...``."""
    ap, ap50 = (metrics.get(k, float('nan')) for k in AP_KEYS)
    lines = [f'Demo box AP {ap:.3f}  AP50 {ap50:.3f}  (COCO metric, {num_images} synthetic '
             f'val images; {minutes:.1f} min)']
    if MASK_AP_KEYS[0] in metrics:
        mask_ap, mask_ap50 = (metrics[k] for k in MASK_AP_KEYS)
        lines.append(f'Demo mask AP {mask_ap:.3f}  AP50 {mask_ap50:.3f}  (COCO segm metric)')
    return lines


def train_and_test(cfg: Config) -> tuple[Runner, dict]:
    """Train with the Runner, then evaluate the final model on the test set."""
    from codetr.engine import adapt_cfg_to_device
    from codetr.registry import RUNNERS

    adapt_cfg_to_device(cfg, 'none')
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    return runner, metrics


def main(argv: list[str] | None = None) -> dict:
    from codetr.utils import register_all_modules

    register_all_modules()
    args = parse_args(argv)
    start = time.perf_counter()
    cfg = build_cfg(args)
    runner, metrics = train_and_test(cfg)
    pred_dir = osp.join(args.work_dir, 'predictions')
    os.makedirs(pred_dir, exist_ok=True)
    drawings = draw_predictions(runner, pred_dir, args.num_images, args.score_thr)
    scalars = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    curves = plot_curves(scalars, osp.join(args.work_dir, 'curves.png'))
    minutes = (time.perf_counter() - start) / 60
    print()
    for line in ap_lines(metrics, len(runner.test_dataloader.dataset), minutes):
        print(line)
    print(f'  checkpoints and logs: {osp.abspath(args.work_dir)}')
    print(f'  training log:         {osp.abspath(runner.log_dir)}')
    print(f'  predictions:          {osp.abspath(pred_dir)} ({len(drawings)} PNGs, '
          f'ground truth left, predictions >= {args.score_thr} right)')
    print(f'  curves:               {osp.abspath(curves)}')
    return dict(metrics=metrics, drawings=drawings, curves=curves, minutes=minutes)


if __name__ == '__main__':
    main()
