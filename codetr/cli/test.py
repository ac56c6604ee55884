"""Evaluate a checkpoint: ``codetr-test CONFIG CHECKPOINT [options]``.

``tools/test.py`` in a clone is the same command. CONFIG is a file, a path under the
configs folder or a short name (:func:`codetr.utils.resolve_config`). The flags are
MMDetection's. ``--out`` adds a ``DumpDetResults`` metric, ``--show-dir``
turns on the ``DetVisualizationHook`` of ``default_hooks``, ``--tta`` wraps the model in
``cfg.tta_model`` and tests with ``cfg.tta_pipeline``; ``--amp`` tests under float16
autocast on CUDA, bfloat16 on a CPU. Distributed testing goes through
``tools/dist_test.sh`` or ``tools/slurm_test.sh``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

from codetr.cpu_runtime import configure_cpu_runtime

# Before torch loads: a bounded OpenMP spin (CODETR_OMP_SPIN=0 turns it off) and, where asked
# for with CODETR_LEAN_MALLOC=1, glibc's lean allocator (codetr/cpu_runtime.py). Nothing
# changes in a process that imported torch already.
configure_cpu_runtime()

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from codetr.cli.utils import CONFIG_HELP, command_name, fail, load_config  # noqa: E402

WORK_DIRS = './work_dirs'
OUT_SUFFIXES = ('.pkl', '.pickle', '.json')
PROG = command_name('codetr-test', 'tools/test.py')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description='Test (and evaluate) a codetr detector')
    parser.add_argument('config', help=CONFIG_HELP)
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation logs go')
    parser.add_argument('--out', help='dump predictions to a .pkl or .json file')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='draw predictions into this directory '
                        '(relative paths are inside the run\'s log directory)')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds per shown image')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--amp', action='store_true', help='half-precision inference: float16 '
                        'autocast on CUDA, bfloat16 on a CPU')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.batch_size=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _fail(message: str) -> None:
    fail(PROG, message)


def build_cfg(args: argparse.Namespace) -> Config:
    """The config after applying the command-line flags (no Runner built)."""
    from codetr.engine import adapt_cfg_to_device, enable_test_amp

    cfg = load_config(args.config, PROG)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(WORK_DIRS, osp.splitext(osp.basename(args.config))[0])
    cfg.load_from, cfg.resume = args.checkpoint, False
    if args.show or args.show_dir:
        _enable_visualization(cfg, args)
    if args.tta:
        _enable_tta(cfg)
    if args.amp:
        try:
            enable_test_amp(cfg)
        except ValueError as err:
            _fail(str(err))
    if args.out is not None:
        _add_dump_metric(cfg, args.out)
    adapt_cfg_to_device(cfg, args.launcher)
    return cfg


def _enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hook = cfg.get('default_hooks', {}).get('visualization')
    if not hook or hook.get('type') != 'DetVisualizationHook':
        _fail('--show/--show-dir need default_hooks.visualization='
              "dict(type='DetVisualizationHook') in the config")
    from codetr.registry import HOOKS
    if 'DetVisualizationHook' not in HOOKS.known_names():
        _fail('--show/--show-dir need DetVisualizationHook, which is not registered '
              '(codetr.visualization failed to import?)')
    hook.draw = True
    if args.show:
        hook.show, hook.wait_time = True, args.wait_time
    if args.show_dir:
        hook.test_out_dir = args.show_dir


def _enable_tta(cfg: Config) -> None:
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        _fail(f'--tta needs {" and ".join(missing)} in the config (tta_model wraps the '
              'model, e.g. a DetTTAModel; tta_pipeline is the test pipeline with TestTimeAug)')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def _add_dump_metric(cfg: Config, out: str) -> None:
    if not out.endswith(OUT_SUFFIXES):
        _fail(f'--out {out} must end with one of {", ".join(OUT_SUFFIXES)}')
    try:  # written alongside the COCO/LVIS metrics; import only when asked for
        from codetr.evaluation import DumpDetResults  # noqa: F401
    except ImportError as err:
        _fail(f'--out needs codetr.evaluation.DumpDetResults, which is unavailable: {err}')
    dump = dict(type='DumpDetResults', out_file_path=out)
    evaluator = cfg.get('test_evaluator')
    if evaluator is None:
        cfg.test_evaluator = [dump]
    elif isinstance(evaluator, dict) and 'metrics' in evaluator:
        metrics = evaluator.metrics
        evaluator.metrics = (list(metrics) if isinstance(metrics, list) else [metrics]) + [dump]
    elif isinstance(evaluator, dict):
        cfg.test_evaluator = [evaluator, dump]
    else:
        cfg.test_evaluator = list(evaluator) + [dump]


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return the metrics (``codetr-test`` runs :func:`cli`, which returns 0)."""
    from codetr.engine import shutdown_distributed
    from codetr.registry import RUNNERS
    from codetr.utils import register_all_modules

    register_all_modules()
    cfg = build_cfg(parse_args(argv))
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    try:
        return runner.test()
    finally:
        shutdown_distributed()


def cli() -> int:
    """The ``codetr-test`` entry point: a console script exits with its return value, so
    the metrics dict of :func:`main` (printed in the log) is not returned."""
    main()
    return 0


if __name__ == '__main__':
    cli()
