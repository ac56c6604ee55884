"""Time the MMDetection 3.3 Co-DETR port the way train_step.py / inference.py time codetr;
prints one JSON object. Runs inside the port's own environment (mmdet 3.3, mmcv 2.1 with
ops, fairscale) and never imports codetr.

    PORT_PYTHON benchmarks/peer_mmdet_port.py --port PATH --mode train|predict
        --batch-file BATCH.pth [--threads N] [--iters 3] [--warmup 1] [--floor]

``PATH`` is the port's code: a folder holding ``codetr/`` and ``configs/codino/`` (the
``projects/CO-DETR`` folder of MMDetection 3.3), or an MMDetection checkout that has it.
The model is the port's Co-DINO R50 (``configs/codino/co_dino_5scale_r50_8xb2_1x_coco.py``:
K = 2, 900 queries, 4 encoder layers checkpointed through fairscale) with random weights
(the backbone's pretrained ``init_cfg`` is cleared, as codetr's benchmarks do). The batch
file (written by train_step.py / inference.py with ``--peer``) holds the uint8 images, their
meta data and the boxes, so both sides see the same pixels and boxes. The optimizer is the
config's ``optim_wrapper`` (AdamW lr 2e-4, weight decay 1e-4, gradient clipping at 0.1,
backbone lr x 0.1). ``--floor`` adds the step's matrix-product floor (matrix_floor.py).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_floor import measure_floor  # noqa: E402

CONFIG = 'configs/codino/co_dino_5scale_r50_8xb2_1x_coco.py'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--port', required=True, help="folder with the port's codetr/ and "
                        'configs/ (projects/CO-DETR of MMDetection 3.3)')
    parser.add_argument('--mode', choices=('train', 'predict'), default='train')
    parser.add_argument('--batch-file', required=True)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--floor', action='store_true', help='measure the matrix floor')
    return parser.parse_args(argv)


def port_root(path: str) -> Path:
    """The folder with ``codetr/__init__.py`` and the config, given it or a checkout above."""
    for root in (Path(path), Path(path) / 'projects' / 'CO-DETR'):
        if (root / 'codetr' / '__init__.py').is_file() and (root / CONFIG).is_file():
            return root
    raise FileNotFoundError(f'{path} holds neither codetr/__init__.py and {CONFIG} nor '
                            'projects/CO-DETR/ with them: give the port\'s code folder')


def import_port(root: Path) -> None:
    """Import the port's package (it registers CoDETR & co. into mmdet's registries) under
    the name ``mmdet_co_detr_port``, so it can never be confused with codetr."""
    spec = importlib.util.spec_from_file_location(
        'mmdet_co_detr_port', root / 'codetr' / '__init__.py',
        submodule_search_locations=[str(root / 'codetr')])
    module = importlib.util.module_from_spec(spec)
    sys.modules['mmdet_co_detr_port'] = module
    spec.loader.exec_module(module)


def build(root: Path):
    """The port's model (random weights) and config."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    register_all_modules(init_default_scope=True)
    MMLogger.get_instance('peer_mmdet_port', log_level='ERROR')
    import_port(root)
    cfg = Config.fromfile(str(root / CONFIG), import_custom_modules=False)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def checkpointed_layers(model) -> int:
    """Encoder layers whose forward fairscale's checkpoint_wrapper replaced."""
    layers = model.query_head.transformer.encoder.layers
    return sum(isinstance(layer.__dict__.get('forward'), functools.partial) for layer in layers)


def load_batch(path: str, training: bool) -> dict:
    """The batch file as the port's data preprocessor takes it."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    batch = torch.load(path, weights_only=True)
    samples = []
    for i, meta in enumerate(batch['metas']):
        sample = DetDataSample(metainfo=dict(meta))
        if training:
            sample.gt_instances = InstanceData(bboxes=batch['gt_bboxes'][i].float(),
                                               labels=batch['gt_labels'][i].long())
        samples.append(sample)
    return dict(inputs=list(batch['images']), data_samples=samples)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, iters: int, warmup: int) -> tuple[list[float], float]:
    """Seconds of each timed call of ``step`` and the RSS level before the first call."""
    baseline = peak_rss_mb()
    times = []
    for it in range(warmup + iters):
        t0 = time.perf_counter()
        step()
        if it >= warmup:
            times.append(time.perf_counter() - t0)
    return times, baseline


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = port_root(args.port)
    model, cfg = build(root)
    training = args.mode == 'train'
    last_loss: list[float] = []  # the loss of the last training step (finite: it trains)
    data = model.data_preprocessor(load_batch(args.batch_file, training), training)
    if training:
        from mmengine.optim import build_optim_wrapper

        model.train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

        def step() -> None:
            with optim_wrapper.optim_context(model):
                losses = model(**data, mode='loss')
            loss, _ = model.parse_losses(losses)
            optim_wrapper.update_params(loss)
            last_loss[:] = [loss.item()]
    else:
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(**data, mode='predict')

    times, baseline = time_steps(step, args.iters, args.warmup)
    median = statistics.median(times)
    peak = peak_rss_mb()
    import mmcv
    import mmdet
    result = {
        'benchmark': f'peer_mmdet_port_{args.mode}', 'port': str(root), 'config': CONFIG,
        'threads': torch.get_num_threads(), 'iters': args.iters, 'warmup': args.warmup,
        'batch_size': len(data['data_samples']), 'precision': 'float32',
        'step_s' if training else 'batch_s': round(median, 4), 'times_s': [
            round(t, 4) for t in times],
        'peak_mem_mb': round(peak, 1),
        'memory': {'kind': 'cpu_peak_rss', 'peak_mb': round(peak, 1),
                   'baseline_mb': round(baseline, 1), 'delta_mb': round(peak - baseline, 1)},
        'checkpointed_encoder_layers': checkpointed_layers(model),
        **({'last_loss': round(last_loss[0], 4)} if last_loss else {}),
        'versions': {'torch': torch.__version__, 'mmdet': mmdet.__version__,
                     'mmcv': mmcv.__version__},
    }
    if args.floor:
        result['matrix_floor'] = measure_floor(step, median)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
