"""Training-step time alone and beside a busy second process, for several OpenMP / thread
settings; prints one JSON object.

    python benchmarks/contention.py [CONFIG] [--threads 2] [--rounds 2]
        [--settings default passive spin10k threads1] [-- train_step arguments]

For each round and setting, ``train_step.py`` runs once alone and once while a competitor
(the same training step in a loop, same settings) holds the cores; the competitor is a
separate process, started before and stopped after the measured run. ``slowdown`` is
contended / alone per setting; ``alone_vs_default`` shows what a setting costs when the
machine is otherwise idle. A setting is a name for environment variables (and a thread
count): ``default`` (OpenMP's own defaults: ``CODETR_OMP_SPIN=0``), ``codetr`` (what the
tools apply: ``GOMP_SPINCOUNT`` bounded), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``),
``spin10k`` / ``spin100k`` (``GOMP_SPINCOUNT``), ``threads1`` (one thread).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = 'configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py'
SETTINGS = {
    'default': ({'CODETR_OMP_SPIN': '0'}, None),
    'codetr': ({}, None),
    'passive': ({'OMP_WAIT_POLICY': 'PASSIVE'}, None),
    'spin10k': ({'GOMP_SPINCOUNT': '10000'}, None),
    'spin100k': ({'GOMP_SPINCOUNT': '100000'}, None),
    'threads1': ({'CODETR_OMP_SPIN': '0'}, 1),
}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index('--') + 1:] if '--' in argv else []
    argv = argv[:argv.index('--')] if '--' in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--settings', nargs='+', default=['default', 'codetr', 'passive',
                                                          'threads1'], choices=list(SETTINGS))
    return parser.parse_args(argv), rest


def command(config: str, threads: int, extra: list[str], iters: str = '5') -> list[str]:
    return [sys.executable, str(HERE / 'train_step.py'), config, '--threads', str(threads),
            '--iters', iters, '--warmup', '2', '--no-floor', *extra]


def measure(cmd: list[str], env: dict, competitor: list[str] | None) -> float:
    """step_s of ``cmd``, with ``competitor`` running beside it when given."""
    busy = None
    if competitor is not None:
        busy = subprocess.Popen(competitor, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(5)  # let it get past its imports and into its steps
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])['step_s']


def main(argv: list[str] | None = None) -> dict:
    args, extra = parse_args(argv)
    alone: dict[str, list[float]] = {s: [] for s in args.settings}
    busy: dict[str, list[float]] = {s: [] for s in args.settings}
    for _ in range(args.rounds):
        for name in args.settings:
            env_extra, threads = SETTINGS[name]
            threads = threads or args.threads
            env = {**os.environ, **env_extra, 'OMP_NUM_THREADS': str(threads)}
            cmd = command(args.config, threads, extra)
            alone[name].append(measure(cmd, env, None))
            busy[name].append(measure(cmd, env, command(args.config, threads, extra, '100000')))
    med_alone = {s: statistics.median(v) for s, v in alone.items()}
    med_busy = {s: statistics.median(v) for s, v in busy.items()}
    base = med_alone[args.settings[0]]
    result = {
        'benchmark': 'contention', 'config': args.config, 'threads': args.threads,
        'settings': {s: {'env': SETTINGS[s][0], 'threads': SETTINGS[s][1] or args.threads}
                     for s in args.settings},
        'alone_step_s': {s: round(v, 4) for s, v in med_alone.items()},
        'contended_step_s': {s: round(v, 4) for s, v in med_busy.items()},
        'slowdown': {s: round(med_busy[s] / med_alone[s], 3) for s in args.settings},
        'alone_vs_first': {s: round(med_alone[s] / base, 3) for s in args.settings},
        'runs': {'alone': alone, 'contended': busy},
    }
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
