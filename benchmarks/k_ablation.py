"""Train the quick-start Co-DINO with K = 0, 1 (ATSS), 1 (Faster R-CNN) and 2 aux heads on the
synthetic shapes for the same epochs and seeds; print one JSON object and write a PNG.

    python benchmarks/k_ablation.py [--out-dir work_dirs/k_ablation] [--seeds 0 1 2]
        [--variants k0 k1_atss k1_rcnn k2] [--epochs 6] [--train-images 320] [--val-images 128]
        [--min-size 96] [--max-size 128] [--jobs 2] [--threads 1] [--checkpoints none|last|all]

Every (variant, seed) run trains in its own process (``--threads`` torch threads each,
``--jobs`` at a time) with mmengine's ``randomness=dict(seed=SEED, deterministic=True)``, no
data-loader workers, and evaluates the COCO box AP on the val images once, after the last
epoch. The synthetic set is written once under ``OUT_DIR/data`` (seed 0; the same arguments
give the same files). The JSON holds, per variant, box AP and AP50 (mean, sample standard
deviation, min, max, every seed), the median training-step time (forward, backward and
optimizer step; data loading excluded) and the peak resident memory of the run's process,
and the paper's ordering K = 0 < K = 1 <= K = 2 tested on the means. Figures and the command
of the recorded run are in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

QUICKSTART = 'configs/quickstart/co_dino_r18_{}_quickstart_synthetic.py'
# variant -> (config, K, aux heads); the same backbone, transformer, data, schedule and lr
VARIANTS = {
    'k0': (QUICKSTART.format('k0'), 0, ()),
    'k1_atss': (QUICKSTART.format('k1'), 1, ('atss',)),
    'k1_rcnn': (QUICKSTART.format('k1_rcnn'), 1, ('rcnn',)),
    'k2': (QUICKSTART.format('k2'), 2, ('rcnn', 'atss')),
}
AP_KEYS = {'ap': 'coco/bbox_mAP', 'ap50': 'coco/bbox_mAP_50'}
DATA_SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='work_dirs/k_ablation',
                        help='runs, the synthetic data, k_ablation.json and k_ablation.png')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-images', type=int, default=320)
    parser.add_argument('--val-images', type=int, default=128)
    parser.add_argument('--min-size', type=int, default=96, help='shortest image side, px')
    parser.add_argument('--max-size', type=int, default=128,
                        help='longest image side, px; images are trained and tested at it')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per run')
    parser.add_argument('--checkpoints', choices=('none', 'last', 'all'), default='none',
                        help='keep the weights (no optimizer state) of every run\'s last epoch '
                        'or of all its epochs (for tools/analysis_tools/instability.py)')
    parser.add_argument('--in-process', action='store_true',
                        help='train the runs one after another in this process (tests); the '
                        'peak memory is then the process\'s, not the run\'s')
    parser.add_argument('--run-one', nargs=2, metavar=('VARIANT', 'SEED'),
                        help=argparse.SUPPRESS)  # a child process: one run, result.json
    args = parser.parse_args(argv)
    for name in ('epochs', 'train_images', 'val_images', 'batch_size', 'jobs', 'threads'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    return args


def data_root(args: argparse.Namespace) -> Path:
    return Path(args.out_dir) / 'data'


def ensure_data(args: argparse.Namespace) -> Path:
    """Write the synthetic set under ``OUT_DIR/data`` unless the same one is there."""
    from codetr.datasets.synthetic import make_synthetic_dataset

    root = data_root(args)
    stamp = dict(train=args.train_images, val=args.val_images, seed=DATA_SEED,
                 min_size=args.min_size, max_size=args.max_size)
    stamp_file = root / 'k_ablation_data.json'
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return root
    make_synthetic_dataset(root, args.train_images, args.val_images, DATA_SEED,
                           args.min_size, args.max_size)
    stamp_file.write_text(json.dumps(stamp))
    return root


def run_config(args: argparse.Namespace, variant: str, seed: int, work_dir: Path):
    """The variant's quick-start config trained at the ablation's size and seed."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO_ROOT / VARIANTS[variant][0]))
    root = str(data_root(args).resolve()) + '/'
    scale = (args.max_size, args.max_size)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        dataset.data_root = root
        for step in dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = scale
        dataset.serialize_data = False  # its gc.collect() costs a second per dataset
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_dataloader.batch_size = args.batch_size
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + 'annotations/instances_val.json'
    epochs = args.epochs
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=epochs)
    for scheduler in cfg.param_scheduler:  # the quick-start warm-up, cosine over `epochs`
        if scheduler['type'] == 'CosineAnnealingLR':
            scheduler.update(T_max=epochs, end=epochs)
    cfg.randomness = dict(seed=seed, deterministic=True, diff_rank_seed=False)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'{variant}_seed{seed}'
    cfg.log_level = 'WARNING'
    cfg.default_hooks.logger = dict(type='DistSafeLoggerHook', interval=10**6)
    cfg.default_hooks.checkpoint = (
        None if args.checkpoints == 'none' else
        dict(type='AtomicCheckpointHook', interval=1 if args.checkpoints == 'all' else epochs,
             max_keep_ckpts=-1 if args.checkpoints == 'all' else 1, save_optimizer=False,
             save_param_scheduler=False))
    cfg.visualizer.vis_backends = []
    return cfg


def train_one(args: argparse.Namespace, variant: str, seed: int) -> dict:
    """Train and evaluate one run; its result is also written to ``WORK_DIR/result.json``."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from codetr.utils import register_all_modules

    class StepTimer(Hook):
        """Wall time of each training step (forward, backward, optimizer step)."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []
            self.metrics: dict = {}

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            self._start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self.times.append(time.perf_counter() - self._start)
            self.losses.append(float(outputs['loss'].detach()))

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.metrics = dict(metrics or {})

    torch.set_num_threads(args.threads)
    register_all_modules()
    skip_config_formatting()
    work_dir = Path(args.out_dir) / 'runs' / f'{variant}_seed{seed}'
    cfg = run_config(args, variant, seed, work_dir)
    runner = Runner.from_cfg(cfg)
    timer = StepTimer()
    runner.register_hook(timer, priority='LOWEST')
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # the first steps warm allocators and compile nothing else: leave out the first 5
    steady = timer.times[5:] or timer.times
    result = dict(variant=variant, seed=seed, config=VARIANTS[variant][0],
                  **{key: round(float(timer.metrics[name]), 4)
                     for key, name in AP_KEYS.items()},
                  iters=len(timer.times), last_loss=round(timer.losses[-1], 5),
                  step_s=round(statistics.median(steady), 4),
                  peak_mb=round(usage.ru_maxrss / 1024, 1), wall_s=round(wall, 1),
                  process_cpu_s=round(usage.ru_utime + usage.ru_stime, 1))
    (work_dir / 'result.json').write_text(json.dumps(result))
    return result


def skip_config_formatting() -> None:
    """Let mmengine write configs (work-dir dump, log, checkpoint meta) without reformatting
    them with yapf, which takes about 3 s per call on a 2-core CPU and is called three times
    per run. The text stays valid Python; only its layout differs."""
    import mmengine.config.config as mmengine_config

    mmengine_config.FormatCode = lambda text, **kwargs: (text, False)


def launch(args: argparse.Namespace, variant: str, seed: int, argv: list[str]) -> dict:
    """One run in a fresh process; its output goes to ``WORK_DIR/run.log``."""
    work_dir = Path(args.out_dir) / 'runs' / f'{variant}_seed{seed}'
    work_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv,
           '--run-one', variant, str(seed)]
    with open(work_dir / 'run.log', 'w') as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                              check=False).returncode
    if code != 0:
        tail = (work_dir / 'run.log').read_text().splitlines()[-20:]
        raise RuntimeError(f'run {variant} seed {seed} failed (exit {code}); the end of '
                           f'{work_dir / "run.log"}:\n' + '\n'.join(tail))
    return json.loads((work_dir / 'result.json').read_text())


def spread(values: list[float]) -> dict:
    """mean, sample standard deviation (0 for one value), min, max and the values."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(mean=round(statistics.fmean(values), 4), std=round(std, 4),
                min=min(values), max=max(values), values=values)


def summarise(results: list[dict]) -> dict:
    """Per variant: AP / AP50 spread over seeds, median step time, largest peak memory."""
    summary = {}
    for variant in dict.fromkeys(r['variant'] for r in results):
        runs = sorted((r for r in results if r['variant'] == variant), key=lambda r: r['seed'])
        config, k, heads = VARIANTS[variant]
        summary[variant] = dict(
            config=config, K=k, aux_heads=list(heads), seeds=[r['seed'] for r in runs],
            ap=spread([r['ap'] for r in runs]), ap50=spread([r['ap50'] for r in runs]),
            step_s=dict(median=round(statistics.median(r['step_s'] for r in runs), 4),
                        values=[r['step_s'] for r in runs]),
            peak_mb=max(r['peak_mb'] for r in runs))
    return summary


def compare(summary: dict, better: str, worse: str, key: str) -> dict:
    """``better - worse`` on the mean of ``key``, and whether it exceeds two standard errors
    of the difference (Welch's; seeds as independent samples)."""
    a, b = summary[better][key], summary[worse][key]
    n_a, n_b = len(a['values']), len(b['values'])
    stderr = (a['std'] ** 2 / n_a + b['std'] ** 2 / n_b) ** 0.5
    diff = a['mean'] - b['mean']
    return dict(diff=round(diff, 4), stderr=round(stderr, 4),
                above_2_stderr=bool(diff > 2 * stderr) if stderr > 0 else diff > 0)


def paper_ordering(summary: dict) -> dict:
    """The paper's K = 0 < K = 1 <= K = 2 on box AP and AP50, pair by pair (means)."""
    pairs = [(k1, 'k0') for k1 in ('k1_atss', 'k1_rcnn')] + [('k2', k1) for k1 in
                                                             ('k1_atss', 'k1_rcnn')]
    out = {}
    for better, worse in pairs:
        if better in summary and worse in summary:
            out[f'{better} - {worse}'] = {key: compare(summary, better, worse, key)
                                         for key in AP_KEYS}
    strict = [v['ap']['diff'] > 0 for k, v in out.items() if k.endswith('k0')]
    loose = [v['ap']['diff'] >= -v['ap']['stderr'] for k, v in out.items()
             if k.startswith('k2')]
    out['holds'] = dict(k0_below_k1=all(strict) if strict else None,
                        k1_not_above_k2=all(loose) if loose else None)
    return out


def plot(summary: dict, path: Path) -> None:
    """AP / AP50 per variant (seeds as dots, mean +- std as bars); step time and memory."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(summary)
    xs = range(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for offset, key, colour in ((-0.18, 'ap', 'tab:blue'), (0.18, 'ap50', 'tab:orange')):
        means = [summary[n][key]['mean'] for n in names]
        stds = [summary[n][key]['std'] for n in names]
        axes[0].bar([x + offset for x in xs], means, 0.34, yerr=stds, capsize=3,
                    color=colour, alpha=0.6, label=f'box {key.upper()} (mean +- std)')
        for x, name in zip(xs, names):
            values = summary[name][key]['values']
            axes[0].plot([x + offset] * len(values), values, 'k.', ms=4)
    axes[0].set_ylabel('COCO box AP (val)')
    axes[0].legend(fontsize=8)
    axes[1].bar(xs, [summary[n]['step_s']['median'] for n in names], color='tab:green')
    axes[1].set_ylabel('median training step, s')
    axes[2].bar(xs, [summary[n]['peak_mb'] for n in names], color='tab:gray')
    axes[2].set_ylabel('peak resident memory, MB')
    for ax in axes:
        ax.set_xticks(list(xs), names)
    fig.suptitle('Co-DINO quick start: K aux heads at equal epochs')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def child_argv(argv: list[str]) -> list[str]:
    """The parent's arguments minus those that concern the parent only."""
    return [arg for arg in argv if arg != '--in-process']


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.run_one:
        return train_one(args, args.run_one[0], int(args.run_one[1]))
    start = time.perf_counter()
    ensure_data(args)
    runs = [(v, s) for s in args.seeds for v in args.variants]
    if args.in_process:
        results = [train_one(args, v, s) for v, s in runs]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda vs: launch(args, *vs, child_argv(argv)), runs))
    summary = summarise(results)
    out_dir = Path(args.out_dir)
    png = out_dir / 'k_ablation.png'
    plot(summary, png)
    report = dict(
        setting=dict(epochs=args.epochs, train_images=args.train_images,
                     val_images=args.val_images, image_sides=[args.min_size, args.max_size],
                     batch_size=args.batch_size, seeds=args.seeds, threads=args.threads,
                     jobs=args.jobs, data_seed=DATA_SEED),
        variants=summary, paper_ordering=paper_ordering(summary), png=str(png),
        wall_s=round(time.perf_counter() - start, 1),
        # CPU seconds of every run's process: / jobs, the wall time on an otherwise idle machine
        process_cpu_s=round(sum(r['process_cpu_s'] for r in results), 1))
    (out_dir / 'k_ablation.json').write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return report


if __name__ == '__main__':
    main()
