"""Shared pieces of the model benchmarks: config loading, synthetic batches, peak memory,
per-component timers, and running several configs in fresh processes for comparison.

Memory on a CPU is the process's resident-set high-water mark (``resource.getrusage``
``ru_maxrss``), which never goes down: to compare variants fairly each one runs in its own
subprocess (``run_variants``).
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from codetr.registry import MODELS  # noqa: E402
from codetr.structures import DetDataSample  # noqa: E402
from codetr.utils import register_all_modules  # noqa: E402
from codetr.utils.progress import track  # noqa: E402


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """The config at ``path`` with ``cfg_options`` merged in; registers codetr's modules."""
    if not Path(path).is_file():
        raise FileNotFoundError(f'config {path!r} does not exist; give a path such as '
                                f'configs/quickstart/dino_r18_quickstart_synthetic.py')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    # Timing does not depend on the weights' values, and a pretrained backbone file may not
    # be on this machine: always start from random weights.
    cfg.model.backbone.init_cfg = None
    register_all_modules()
    # mmengine logs every parameter group (INFO, WARNING) to stdout, which is for the JSON
    if not MMLogger.check_instance_created('codetr_benchmark'):
        MMLogger.get_instance('codetr_benchmark', log_level='ERROR')
    return cfg


def build_model(cfg: Config, device: torch.device) -> nn.Module:
    """The detector of ``cfg.model``, initialised (no pretrained weights are downloaded)."""
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device)


def num_classes_of(model: nn.Module) -> int:
    """Classes of the one-to-one head (labels of the synthetic boxes stay below it)."""
    return int(getattr(model.query_head, 'num_classes', 1))


def synthetic_batch(batch_size: int, img_size: int, num_gt: int, num_classes: int,
                    seed: int = 0) -> dict:
    """A raw batch as the dataloader gives it: uint8 (3, S, S) images and samples with
    ``num_gt`` random boxes each, xyxy in input pixels (sides 8 px .. S/2 px)."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, img_size, img_size), generator=g,
                                    dtype=torch.uint8))
        xy = torch.rand(num_gt, 2, generator=g) * img_size / 2
        wh = 8 + torch.rand(num_gt, 2, generator=g) * (img_size / 2 - 8)
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_path=f'synthetic_{i}.jpg', img_shape=(img_size, img_size),
            ori_shape=(img_size, img_size), scale_factor=(1.0, 1.0), flip=False,
            flip_direction=None))
        sample.gt_instances = InstanceData(
            bboxes=(torch.cat([xy, xy + wh], 1)).clamp(max=img_size),
            labels=torch.randint(0, num_classes, (num_gt,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


class SavedTensorMeter:
    """MB of the tensors autograd keeps for the backward pass of one forward (activations).

    Use ``with meter.recording(model):`` around a forward pass. Parameters (and views of
    them) are not counted; tensors saved inside activation-checkpointed regions are dropped
    by the checkpoint's own hooks, so only what checkpointing keeps is counted. Storages
    are counted once however many tensors view them.
    """

    def __init__(self) -> None:
        self.saved_mb = 0.0

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[None]:
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in params and tensor.device.type != 'meta':
                seen[ptr] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        self.saved_mb = round(sum(seen.values()) / 2**20, 1)


class PeakMemory:
    """Peak memory in MB: on CUDA ``max_memory_allocated``; on a CPU the RSS high-water mark
    of the process, and its growth over the level at ``start()``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline_mb = 0.0

    def _now_mb(self) -> float:
        if self.device.type == 'cuda':
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    def start(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.baseline_mb = self._now_mb()

    def report(self) -> dict[str, float]:
        kind = 'cuda_max_allocated' if self.device.type == 'cuda' else 'cpu_peak_rss'
        peak = self._now_mb()
        return {'kind': kind, 'peak_mb': round(peak, 1),
                'baseline_mb': round(self.baseline_mb, 1),
                'delta_mb': round(peak - self.baseline_mb, 1)}


def minor_faults() -> int:
    """Page faults of this process so far that needed no disk read (first touches of fresh
    memory, mostly): a count that, unlike time, does not depend on the machine's load."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class ComponentTimer:
    """Wall time of named model components during one forward pass.

    Only outermost regions count: a region entered while another is open (the decoder
    called from the positive-query branch, an aux head calling the encoder...) is part of
    the open one, so the recorded times never overlap and add up to at most the forward.
    Regions entered while ``active`` is False (e.g. checkpoint recomputation during the
    backward pass, or a warm-up step) are ignored.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.active = False
        self.times: dict[str, float] = defaultdict(float)
        self._open: list[tuple[str, float]] = []
        self._handles: list = []

    def enter(self, name: str) -> None:
        """Open region ``name``; it is timed only when no other region is open."""
        if not self.active:
            return
        outermost = not self._open
        if outermost:
            sync(self.device)
        self._open.append((name, time.perf_counter() if outermost else None))

    def exit(self) -> None:
        """Close the innermost open region, adding its time if it was the outermost."""
        if not self.active or not self._open:
            return
        name, start = self._open.pop()
        if start is not None:
            sync(self.device)
            self.times[name] += time.perf_counter() - start

    @contextmanager
    def region(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    def hook_module(self, name: str, module: nn.Module) -> None:
        """Time every call of ``module.forward`` under ``name`` (forward hooks)."""
        self._handles.append(module.register_forward_pre_hook(lambda *_: self.enter(name)))
        self._handles.append(module.register_forward_hook(lambda *_: self.exit()))

    def wrap_method(self, name: str, owner: object, method: str) -> None:
        """Time every call of ``owner.<method>`` under ``name`` (instance attribute)."""
        original: Callable = getattr(owner, method)

        def timed(*args, **kwargs):
            with self.region(name):
                return original(*args, **kwargs)

        setattr(owner, method, timed)

    def reset(self) -> None:
        self.times = defaultdict(float)
        self._open = []


def attach_component_timers(model: nn.Module, timer: ComponentTimer) -> dict[str, str]:
    """Hook the detector's parts; returns ``{component: what it includes}`` for the JSON."""
    included = {}
    timer.hook_module('backbone', model.backbone)
    included['backbone'] = 'backbone.forward'
    if getattr(model, 'neck', None) is not None:
        timer.hook_module('neck', model.neck)
        included['neck'] = 'neck.forward'
    transformer = getattr(model.query_head, 'transformer', None)
    if transformer is not None:
        timer.hook_module('encoder', transformer.encoder)
        included['encoder'] = 'query_head.transformer.encoder.forward (deformable encoder)'
        timer.hook_module('decoder', transformer.decoder)
        included['decoder'] = ('query_head.transformer.decoder.forward, main branch only '
                               '(matching, denoising queries and losses are in query_head_rest)')
    for name, head in getattr(model, 'aux_heads', {}).items():
        timer.wrap_method(f'aux_head.{name}', head, 'loss')
        included[f'aux_head.{name}'] = f'aux_heads.{name}.loss (forward, assignment, losses)'
    if hasattr(model.query_head, 'loss_aux') and len(getattr(model, 'aux_heads', {})):
        timer.wrap_method('positive_queries', model.query_head, 'loss_aux')
        included['positive_queries'] = ('query_head.loss_aux, all aux heads (query encoding, '
                                        'decoder pass, fixed-target losses)')
    included['query_head_rest'] = ('forward minus the above: query selection, denoising '
                                   'queries, Hungarian matching, losses, adapter, detector glue')
    return included


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float('nan')


def run_variants(script: Path, base_argv: list[str], variants: dict[str, list[str]]) -> dict:
    """Run ``script`` once per variant in a fresh process; each prints one JSON object.

    Args:
        base_argv: arguments shared by all variants (without the config).
        variants: ``{name: [config, extra args...]}``.
    """
    return {name: run_json([sys.executable, str(script), *argv, *base_argv], f'variant {name!r}')
            for name, argv in track(list(variants.items()), script.stem, unit='variants')}


def run_json(cmd: list[str], label: str, env: dict | None = None) -> dict:
    """Run a benchmark command in a fresh process; the JSON object of its last stdout line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f'{label} failed ({" ".join(cmd)}):\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios_to_first(runs: dict, keys: tuple[str, ...]) -> dict:
    """``{name: {key: value / first run's value}}`` for each numeric key."""
    first = next(iter(runs.values()))
    return {name: {k: round(run[k] / first[k], 3) for k in keys if first.get(k)}
            for name, run in runs.items()}
