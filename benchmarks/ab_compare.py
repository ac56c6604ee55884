"""Paired A/B runs of a benchmark: two code trees (or two environments) measured alternately,
each run a fresh process, with same-run ratios; prints one JSON object.

    python benchmarks/ab_compare.py --a ROOT_A --b ROOT_B [--rounds 3] [--script train_step.py]
        [--a-env K=V ...] [--b-env K=V ...] -- CONFIG [benchmark arguments ...]

Each round runs ``ROOT/benchmarks/SCRIPT CONFIG ...`` for A, then for B (``PYTHONPATH=ROOT``,
so each side imports its own codetr; a separate ``TORCH_EXTENSIONS_DIR`` per side, since
the compiled kernels are cached by name). A is the code before a change (e.g. a
``git worktree`` of the previous commit), B the code after; or the same tree twice with
different ``--a-env`` / ``--b-env`` (an allocator or OpenMP setting). ``ratios`` are B / A
of the medians; ``ratios_per_round`` pair each B run with the A run just before it. Pass
``--no-floor`` to the benchmark to skip the matrix-floor replay.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = ('step_s', 'forward_s', 'backward_step_s', 'batch_s', 'peak_mem_mb')


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index('--') + 1:] if '--' in argv else []
    argv = argv[:argv.index('--')] if '--' in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--a', required=True, help='code tree A (the baseline)')
    parser.add_argument('--b', required=True, help='code tree B')
    parser.add_argument('--a-env', nargs='+', default=[], metavar='K=V')
    parser.add_argument('--b-env', nargs='+', default=[], metavar='K=V')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--script', default='train_step.py', help='benchmark under benchmarks/')
    args = parser.parse_args(argv)
    if not rest:
        parser.error('give the benchmark arguments after --, e.g. -- CONFIG --threads 2')
    return args, rest


def run_json(cmd: list[str], label: str, env: dict) -> dict:
    """The JSON object of the last stdout line of a fresh process (torch is not imported
    here: this process only orchestrates)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f'{label} failed ({" ".join(cmd)}):\n{proc.stderr[-4000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def side_env(root: str, pairs: list[str], ext_dir: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()), TORCH_EXTENSIONS_DIR=ext_dir)
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep:
            raise SystemExit(f'environment setting {pair!r} is not KEY=VALUE')
        env[key] = value
    return env


def medians(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in KEYS
            if all(k in r for r in runs)}


def main(argv: list[str] | None = None) -> dict:
    args, bench_argv = parse_args(argv)
    runs: dict[str, list[dict]] = {'a': [], 'b': []}
    with tempfile.TemporaryDirectory(prefix='codetr_ab_') as tmp:
        sides = {}
        for name in ('a', 'b'):
            root = getattr(args, name)
            script = Path(root) / 'benchmarks' / args.script
            if not script.is_file():
                raise SystemExit(f'{script} does not exist: --{name} must be a codetr tree')
            ext = os.environ.get(f'CODETR_AB_EXT_{name.upper()}', str(Path(tmp) / f'ext_{name}'))
            sides[name] = ([sys.executable, str(script), *bench_argv],
                           side_env(root, getattr(args, f'{name}_env'), ext))
        for index in range(args.rounds):
            for name in ('a', 'b'):
                cmd, env = sides[name]
                runs[name].append(run_json(cmd, f'{name.upper()}, round {index + 1}', env=env))
    med = {name: medians(r) for name, r in runs.items()}
    result = {
        'benchmark': 'ab_compare', 'script': args.script, 'arguments': bench_argv,
        'a': {'root': args.a, 'env': args.a_env, **med['a']},
        'b': {'root': args.b, 'env': args.b_env, **med['b']},
        'ratios': {k: round(med['b'][k] / med['a'][k], 3) for k in med['a'] if med['a'][k]},
        'ratios_per_round': {k: [round(rb[k] / ra[k], 3) for ra, rb in zip(runs['a'], runs['b'])]
                             for k in med['a'] if med['a'][k]},
        'runs': runs,
    }
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
