"""Plot training curves and summarise iteration times from mmengine's JSON logs.

    python tools/analysis_tools/analyze_logs.py plot_curve LOG.json [LOG2.json ...] \\
        [--keys loss loss_cls] [--legend a b] [--title T] [--out curve.png]
    python tools/analysis_tools/analyze_logs.py plot_branches LOG.json [LOG2.json ...] \\
        [--legend run_a run_b] [--out branches.png]
    python tools/analysis_tools/analyze_logs.py cal_train_time LOG.json [--include-outliers]

``plot_branches`` draws a Co-DETR run's learning rate, total loss, one-to-one losses
(decoder / encoder / denoising), each aux head's losses, each head's positive-query losses
and the validation AP, one panel each; several logs are compared on the same axes, the
legend naming the runs (``codetr.visualization.training_curves``).

A log is ``<work_dir>/<timestamp>/vis_data/scalars.json`` (or ``<timestamp>.json``): one
JSON object per line. Training lines carry ``epoch``, ``iter`` (global, 1-based) and
``step``; validation lines carry the metrics (e.g. ``coco/bbox_mAP``) and ``step`` = epoch.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use('Agg')  # files only: this runs on servers without a display
import matplotlib.pyplot as plt  # noqa: E402

from codetr.visualization.training_curves import (  # noqa: E402
    branch_series,
    load_log,
    plot_branches,
    run_names,
)

__all__ = ['branch_series', 'cal_train_time', 'load_log', 'plot_branches', 'plot_curve', 'plt',
           'run_names']


def iter_times_by_epoch(path: str) -> dict[int, list[float]]:
    """Seconds per training iteration (the ``time`` key), grouped by epoch."""
    times: dict[int, list[float]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if 'epoch' in record and 'time' in record:
                    times[record['epoch']].append(float(record['time']))
    return dict(times)


def cal_train_time(path: str, include_outliers: bool = False) -> dict[str, float]:
    """Slowest/fastest epoch by mean iteration time, their spread and the overall mean.

    The first iteration of each epoch (data-loader start-up) is left out unless
    ``include_outliers``. Times are seconds per iteration.
    """
    epochs = iter_times_by_epoch(path)
    if not epochs:
        raise ValueError(f'{path} has no training lines with "epoch" and "time"')
    means = {}
    for epoch, times in epochs.items():
        kept = times if include_outliers or len(times) == 1 else times[1:]
        means[epoch] = sum(kept) / len(kept)
    slowest, fastest = max(means, key=means.get), min(means, key=means.get)
    summary = dict(slowest_epoch=slowest, slowest_time=means[slowest], fastest_epoch=fastest,
                   fastest_time=means[fastest],
                   std_over_epochs=statistics.pstdev(means.values()),
                   average_iter_time=sum(means.values()) / len(means))
    print(f'-----Analyze train time of {path}-----')
    print(f'slowest epoch {slowest}, average time is {means[slowest]:.4f} s/iter')
    print(f'fastest epoch {fastest}, average time is {means[fastest]:.4f} s/iter')
    print(f'time std over epochs is {summary["std_over_epochs"]:.4f}')
    print(f'average iter time: {summary["average_iter_time"]:.4f} s/iter')
    return summary


def plot_curve(paths: list[str], keys: list[str], out: str, legend: list[str] | None = None,
               title: str | None = None) -> list[str]:
    """Plot every ``key`` of every log into one figure saved at ``out``; returns labels."""
    if legend is not None and len(legend) != len(paths) * len(keys):
        raise ValueError(f'--legend needs {len(paths) * len(keys)} names (logs x keys), '
                         f'got {len(legend)}')
    labels = []
    fig, ax = plt.subplots()
    for i, (path, run) in enumerate(zip(paths, run_names(paths))):
        series = load_log(path)
        for j, key in enumerate(keys):
            if key not in series:
                raise KeyError(f'{path} has no {key!r}; its keys: {", ".join(sorted(series))}')
            xs, ys = zip(*series[key])
            label = legend[i * len(keys) + j] if legend else f'{run}: {key}'
            ax.plot(xs, ys, label=label, marker='o' if '/' in key else None)
            labels.append(label)
    ax.set_xlabel('epoch' if all('/' in k for k in keys) else 'iteration')
    ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(out)
    plt.close(fig)
    print(f'saved {out}')
    return labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Analyse mmengine JSON logs')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot metrics against iterations/epochs')
    plot.add_argument('json_logs', nargs='+')
    plot.add_argument('--keys', nargs='+', default=['loss'])
    plot.add_argument('--legend', nargs='+')
    plot.add_argument('--title')
    plot.add_argument('--out', default='curve.png', help='image file to write')
    branches = sub.add_parser('plot_branches', help='lr, per-branch losses and AP of Co-DETR '
                              'runs, compared on the same axes')
    branches.add_argument('json_logs', nargs='+')
    branches.add_argument('--legend', nargs='+', help='one name per log (default: work dirs)')
    branches.add_argument('--out', default='branches.png', help='image file to write')
    timing = sub.add_parser('cal_train_time', help='iteration time statistics')
    timing.add_argument('json_logs', nargs='+')
    timing.add_argument('--include-outliers', action='store_true',
                        help='keep the first iteration of each epoch')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.task == 'plot_curve':
        plot_curve(args.json_logs, args.keys, args.out, args.legend, args.title)
    elif args.task == 'plot_branches':
        for panel, labels in plot_branches(args.json_logs, args.out, args.legend).items():
            print(f'{panel}: {", ".join(labels)}')
        print(f'saved {args.out}')
    else:
        for path in args.json_logs:
            cal_train_time(path, args.include_outliers)


if __name__ == '__main__':
    main()
