"""codetr and the MMDetection Co-DETR port measured side by side, in one sequence of runs.

``train_step.py CONFIG --peer PATH`` / ``inference.py CONFIG --peer PATH`` write one batch
(pixels, meta data, boxes) to a file, then run, for ``--rounds`` rounds, codetr and the port
alternately (codetr, port, codetr, port, ...), each in a fresh process with the same thread
count (``torch.set_num_threads`` and ``OMP_NUM_THREADS``), step count and batch. The port
runs in its own Python (``--peer-python``, default ``$CODETR_PEER_PYTHON`` or the ``venv``
beside ``PATH``) through ``peer_mmdet_port.py``. The JSON holds every run, each side's
median, the per-round and median ratios, and the processor model: a ratio holds on the
machine it was measured on.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from common import run_json

from codetr.cpu_runtime import SET_HERE

PEER_SCRIPT = Path(__file__).resolve().parent / 'peer_mmdet_port.py'
PEER_PYTHON_ENV = 'CODETR_PEER_PYTHON'


def add_peer_args(parser: argparse.ArgumentParser) -> None:
    """``--peer``, ``--peer-python``, ``--rounds``, ``--batch-file`` and ``--floor``."""
    group = parser.add_argument_group('side by side with the MMDetection port')
    group.add_argument('--peer', default=None, metavar='PATH',
                       help="the port's code (projects/CO-DETR of MMDetection 3.3, or a "
                            'checkout holding it): measure it in the same run')
    group.add_argument('--peer-python', default=None, metavar='PYTHON',
                       help=f"the port environment's interpreter (default ${PEER_PYTHON_ENV} "
                            'or PATH/../venv/bin/python)')
    group.add_argument('--rounds', type=int, default=3,
                       help='with --peer: alternate codetr and the port this many times')
    group.add_argument('--batch-file', default=None,
                       help='take the batch from this file (written by --peer runs)')
    group.add_argument('--floor', action=argparse.BooleanOptionalAction, default=True,
                       help="measure the step's matrix-product floor (default on)")


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peer_python(args: argparse.Namespace) -> str:
    """The interpreter of the port's environment; raises when there is none."""
    candidates = [args.peer_python, os.environ.get(PEER_PYTHON_ENV),
                  str(Path(args.peer).resolve().parent / 'venv' / 'bin' / 'python')]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError(
        f'no Python for the port: give --peer-python, set {PEER_PYTHON_ENV}, or create '
        f'{candidates[-1]} (benchmarks/README.md, "Side by side with the MMDetection port")')


def save_batch(raw: dict, path: str) -> None:
    """The raw batch (uint8 images, metas, boxes, labels) as plain tensors and dicts."""
    samples = raw['data_samples']
    torch.save({'images': [img.clone() for img in raw['inputs']],
                'metas': [dict(s.metainfo) for s in samples],
                'gt_bboxes': [s.gt_instances.bboxes.clone() for s in samples],
                'gt_labels': [s.gt_instances.labels.clone() for s in samples]}, path)


def load_batch(path: str) -> dict:
    """A batch written by :func:`save_batch`, as codetr's data preprocessor takes it."""
    from mmengine.structures import InstanceData

    from codetr.structures import DetDataSample

    batch = torch.load(path, weights_only=True)
    samples = []
    for meta, boxes, labels in zip(batch['metas'], batch['gt_bboxes'], batch['gt_labels']):
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        samples.append(sample)
    return dict(inputs=list(batch['images']), data_samples=samples)


def _env(threads: int | None, keep_pythonpath: bool) -> dict:
    env = dict(os.environ)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    if not keep_pythonpath:
        env.pop('PYTHONPATH', None)  # the port's process must not see codetr
        for name in SET_HERE:  # and runs with its own defaults, not codetr's start-up ones
            env.pop(name, None)
    return env


def _summary(runs: list[dict], time_key: str) -> dict:
    times = [run[time_key] for run in runs]
    peaks = [run['peak_mem_mb'] for run in runs]
    return {time_key: round(statistics.median(times), 4), f'{time_key}_all': times,
            'peak_mem_mb': round(statistics.median(peaks), 1), 'peak_mem_mb_all': peaks}


def compare(args: argparse.Namespace, script: Path, codetr_argv: list[str], raw: dict,
            mode: str, time_key: str) -> dict:
    """Alternate codetr (``script`` with ``codetr_argv``) and the port for ``args.rounds``.

    Args:
        codetr_argv: the config and measurement arguments of one codetr run (no --peer).
        raw: the batch both sides measure (written to a temporary file).
        mode: 'train' or 'predict' (the port adapter's mode).
        time_key: 'step_s' or 'batch_s'.
    """
    python = peer_python(args)
    with tempfile.TemporaryDirectory(prefix='codetr_side_by_side_') as tmp:
        batch_file = str(Path(tmp) / 'batch.pth')
        save_batch(raw, batch_file)
        ours, theirs = [], []
        for index in range(args.rounds):
            # the floor once per side (it replays every product: about a step's time)
            floor = args.floor and index == 0
            ours.append(run_json(
                [sys.executable, str(script), *codetr_argv, '--batch-file', batch_file,
                 '--floor' if floor else '--no-floor'],
                f'codetr, round {index + 1}', env=_env(args.threads, True)))
            peer_cmd = [python, str(PEER_SCRIPT), '--port', args.peer, '--mode', mode,
                        '--batch-file', batch_file, '--iters', str(args.iters),
                        '--warmup', str(args.warmup), *(['--floor'] if floor else [])]
            peer_cmd += ['--threads', str(args.threads)] if args.threads else []
            theirs.append(run_json(peer_cmd, f'the port, round {index + 1}',
                                   env=_env(args.threads, False)))
    return summarise(ours, theirs, time_key, mode)


def summarise(ours: list[dict], theirs: list[dict], time_key: str, mode: str) -> dict:
    """Both sides' medians and their ratios (per round and of the medians)."""
    mine, peer = _summary(ours, time_key), _summary(theirs, time_key)
    per_round = [round(p[time_key] / o[time_key], 3) for o, p in zip(ours, theirs)]
    floors = {name: next((r['matrix_floor'] for r in runs if 'matrix_floor' in r), None)
              for name, runs in (('codetr', ours), ('peer', theirs))}
    for name, side in (('codetr', mine), ('peer', peer)):
        floor = floors[name]
        if floor and floor.get('floor_s'):
            side['matrix_floor_s'] = floor['floor_s']
            side['step_over_floor'] = round(side[time_key] / floor['floor_s'], 3)
    return {
        'benchmark': f'{mode}_side_by_side', 'cpu_model': cpu_model(),
        'threads': ours[0].get('threads'), 'rounds': len(ours),
        'order': 'codetr, port, codetr, port, ... (each a fresh process)',
        'precision': {'codetr': ours[0].get('precision', 'float32'),
                      'peer': theirs[0].get('precision', 'float32')},
        'codetr': mine, 'peer': peer,
        'speedup': round(peer[time_key] / mine[time_key], 3),
        'speedup_per_round': per_round,
        'memory_fraction': round(mine['peak_mem_mb'] / peer['peak_mem_mb'], 3),
        'matrix_floor': floors,
        'runs': {'codetr': ours, 'peer': theirs},
    }
