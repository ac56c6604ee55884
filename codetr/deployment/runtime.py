"""Run an exported model with the PyTorch path's preprocessing and output format.

:class:`OnnxDetector` (ONNX Runtime) and :class:`ProgramDetector` (a ``torch.export`` program
loaded with plain torch) stand in for a built detector where ``codetr.apis`` uses one: they
have ``cfg``, ``dataset_meta`` and ``test_step(data) -> list[DetDataSample]``, take the same
packed images (the config's test pipeline) through the same ``DetDataPreprocessor``, and
finish the graph's top-k with the same threshold / rescaling / NMS as
``detr_postprocess`` (:func:`~codetr.models.query_heads.finish_detections`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import Tensor

from codetr.models.query_heads import finish_detections
from codetr.registry import MODELS
from codetr.structures import DetDataSample

from .checks import ExportError
from .export import read_metadata

BACKENDS = ('pytorch', 'onnxruntime', 'export')


def pad_batch(inputs: Tensor, hw: tuple[int, int], pad_value: float) -> Tensor:
    """(B, 3, h, w) -> (B, 3, H, W), padded at the bottom / right (as the preprocessor does).

    Raises:
        ValueError: the batch is larger than ``hw``.
    """
    height, width = inputs.shape[-2:]
    if height > hw[0] or width > hw[1]:
        raise ValueError(f'a {height} x {width} batch does not fit the exported input size '
                         f'{hw[0]} x {hw[1]}: export with --dynamic-shape, or with --shape at '
                         'least as large as the test pipeline makes the images')
    return F.pad(inputs, (0, hw[1] - width, 0, hw[0] - height), value=pad_value)


class DeployedDetector:
    """An exported graph behind a detector's inference interface.

    Args:
        path: the exported file (``.onnx`` or ``.pt2``).
        cfg: the model's config (its data preprocessor and class names); without it the
            file's own metadata describes the preprocessing.
    """

    def __init__(self, path: str | Path, cfg: Config | None = None) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.cfg = cfg
        self.data_preprocessor = self._build_preprocessor(cfg)
        classes = self.metadata.get('classes') or ()
        self.dataset_meta = {'classes': tuple(classes)} if classes else _cfg_classes(cfg)
        spec = self.metadata['input_spec']
        self.static_shape = None if spec['dynamic'] else (spec['batch'], spec['height'],
                                                          spec['width'])

    def _build_preprocessor(self, cfg: Config | None) -> torch.nn.Module:
        if cfg is not None:
            return MODELS.build(cfg.model.data_preprocessor)
        pre = self.metadata['preprocess']
        return MODELS.build(dict(type='DetDataPreprocessor', mean=pre['mean'], std=pre['std'],
                                 bgr_to_rgb=pre['bgr_to_rgb'],
                                 pad_size_divisor=pre['pad_size_divisor'],
                                 pad_value=pre['pad_value']))

    def test_step(self, data: dict) -> list[DetDataSample]:
        """Packed images (``inputs``: list of uint8 (3, H, W); ``data_samples``) ->
        samples with ``pred_instances``, as ``CoDETR.test_step``."""
        with torch.no_grad():
            data = self.data_preprocessor(data, False)
        return self.predict(data['inputs'], data['data_samples'])

    def predict(self, inputs: Tensor, data_samples: list[DetDataSample],
                rescale: bool = True) -> list[DetDataSample]:
        """Adds ``pred_instances`` (bboxes (N, 4) xyxy, scores, labels) to each sample, in
        original pixels when ``rescale``, as ``CoDETR.predict``."""
        sizes = torch.tensor([s.metainfo['img_shape'][:2] for s in data_samples],
                             dtype=torch.int64)
        boxes, scores, labels = self.run_batch(inputs.float(), sizes)
        post = self.metadata['postprocess']
        for i, sample in enumerate(data_samples):
            sample.pred_instances = finish_detections(
                boxes[i], scores[i], labels[i], sample.metainfo, post['max_per_img'],
                post['score_thr'], post['nms'], rescale)
        return data_samples

    def run_batch(self, images: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The graph on a preprocessed batch of any size: a static graph gets it padded to
        its input size and cut into (or filled up to) its batch."""
        if self.static_shape is None:
            return self.run(images, sizes)
        batch, height, width = self.static_shape
        images = pad_batch(images, (height, width), self.metadata['preprocess']['pad_value'])
        outputs = []
        for start in range(0, images.shape[0], batch):
            chunk, chunk_sizes = images[start:start + batch], sizes[start:start + batch]
            missing = batch - chunk.shape[0]
            if missing:
                chunk = torch.cat([chunk, chunk.new_zeros(missing, *chunk.shape[1:])])
                chunk_sizes = torch.cat([chunk_sizes,
                                         chunk_sizes.new_tensor([[height, width]] * missing)])
            outputs.append([out[:batch - missing] for out in self.run(chunk, chunk_sizes)])
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    def run(self, images: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """boxes (B, K, 4), scores (B, K), labels (B, K) of one graph call."""
        raise NotImplementedError


class OnnxDetector(DeployedDetector):
    """An exported ``.onnx`` file run by ONNX Runtime.

    Args:
        path, cfg: see :class:`DeployedDetector`.
        device: ``'cpu'`` or ``'cuda[:N]'`` (needs the onnxruntime-gpu build).
        threads: ONNX Runtime's intra-op threads (default: its own choice, the core count).
        session_options: settings over :func:`session_options`'s defaults: an
            ``onnxruntime.SessionOptions`` attribute (``enable_mem_pattern``) or a session
            configuration key (one with a dot: ``session.intra_op.allow_spinning``).
    """

    def __init__(self, path: str | Path, cfg: Config | None = None, device: str = 'cpu',
                 threads: int | None = None, session_options: dict | None = None) -> None:
        super().__init__(path, cfg)
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError('the onnxruntime backend needs onnxruntime: pip install -r '
                              'requirements/export.txt') from err
        options = session_options_for(threads, session_options)
        providers = ['CPUExecutionProvider']
        if device.startswith('cuda'):
            index = int(device.split(':')[1]) if ':' in device else 0
            providers.insert(0, ('CUDAExecutionProvider', {'device_id': index}))
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)

    def run(self, images: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feed = {'images': images.detach().cpu().contiguous().numpy(),
                'img_sizes': sizes.cpu().numpy()}
        return tuple(torch.from_numpy(out) for out in self.session.run(None, feed))


def session_options_for(threads: int | None = None,
                        overrides: dict | None = None) -> Any:
    """The ``onnxruntime.SessionOptions`` :class:`OnnxDetector` runs with.

    Defaults, each measured at Co-DINO R50 (benchmarks/README.md, deployment section):

    - graph optimisations at 'extended' (fusions) rather than 'all': with the layout
      optimisations of 'all' (blocked NCHWc convolutions) a session kept 190 MB more
      resident, for no measurable speed;
    - no CPU memory arena: freed activations go back to the allocator (peak RSS ~250 MB
      lower at 320 x 320, no measurable cost in time);
    - with ``threads``: that many intra-op threads and one inter-op thread.

    Args:
        threads: intra-op threads (None: ONNX Runtime's choice, the core count).
        overrides: ``SessionOptions`` attributes, or configuration keys (with a dot, e.g.
            ``session.intra_op.allow_spinning``: '0' / '1'), set after the defaults.

    Raises:
        ValueError: a key that is neither.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.enable_cpu_mem_arena = False
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    for key, value in (overrides or {}).items():
        if '.' in key:
            options.add_session_config_entry(key, str(int(value) if isinstance(value, bool)
                                                      else value))
        elif hasattr(options, key):
            setattr(options, key, value)
        else:
            raise ValueError(f'{key!r} is neither an onnxruntime.SessionOptions attribute '
                             "nor a session configuration key (those have a dot, e.g. "
                             "'session.intra_op.allow_spinning')")
    return options


class ProgramDetector(DeployedDetector):
    """An ``ExportedProgram`` saved by ``torch.export.save`` (a ``.pt2``), run by torch.

    Args:
        path, cfg: see :class:`DeployedDetector`.
        device: where the program runs.
    """

    def __init__(self, path: str | Path, cfg: Config | None = None,
                 device: str = 'cpu') -> None:
        super().__init__(path, cfg)
        self.device = torch.device(device)
        self.module = torch.export.load(str(self.path)).module().to(self.device)

    def run(self, images: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            outputs = self.module(images.to(self.device), sizes.to(self.device))
        return tuple(out.cpu() for out in outputs)


def load_deployed(path: str | Path, cfg: Config | None = None, backend: str | None = None,
                  device: str = 'cpu', **kwargs: Any) -> DeployedDetector:
    """:class:`OnnxDetector` or :class:`ProgramDetector` for ``path`` (``backend`` defaults
    to the file suffix: ``.onnx`` -> onnxruntime, else export)."""
    if backend is None:
        backend = 'onnxruntime' if str(path).endswith('.onnx') else 'export'
    suffix = {'onnxruntime': '.onnx', 'export': '.pt2'}.get(backend)
    if suffix is not None and Path(path).suffix != suffix:
        raise ExportError(f"backend={backend!r} runs a {suffix} file written by "
                          f'tools/deployment/export_onnx.py, not {path} (a checkpoint runs '
                          "with backend='pytorch')")
    if backend == 'onnxruntime':
        return OnnxDetector(path, cfg, device=device, **kwargs)
    if backend == 'export':
        return ProgramDetector(path, cfg, device=device)
    raise ValueError(f'backend {backend!r} runs no exported file; use one of {BACKENDS[1:]}')


def _cfg_classes(cfg: Config | None) -> dict | None:
    if cfg is None:
        return None
    metainfo = cfg.get('test_dataloader', {}).get('dataset', {}).get('metainfo') or {}
    return {'classes': tuple(metainfo['classes'])} if metainfo.get('classes') else None
