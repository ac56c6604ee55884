"""Trace a detector's inference graph with ``torch.export`` and write it as ONNX or as a
saved ``ExportedProgram``.

One trace serves both formats: ``torch.export.export`` (non-strict) gives an
``ExportedProgram`` of ATen operators; ``torch.save``-free ``torch.export.save`` writes it as
a ``.pt2`` that loads with plain torch, and ``torch.onnx.export`` (the dynamo exporter, which
takes the program as it is) translates it to ONNX. Every file carries a JSON description
(``codetr`` metadata: inputs, outputs, post-processing, preprocessing, classes) so that a
runtime needs no config to use it.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checks import ExportError
from .graph import INPUT_NAMES, OUTPUT_NAMES, DetrGraph

FORMATS = ('onnx', 'torch_export')
# GridSample, which carries the deformable attention, exists from opset 16.
MIN_OPSET = 16
DEFAULT_OPSET = 18
METADATA_KEY = 'codetr'
PROGRAM_METADATA_FILE = 'codetr.json'
# Largest side the dynamic graphs accept (LSJ 1024 and 1333-px COCO inputs fit).
DEFAULT_MAX_SIDE = 2048
DEFAULT_MAX_BATCH = 64


@dataclass(frozen=True)
class InputSpec:
    """The input shapes an exported graph takes.

    Attributes:
        batch, height, width: the example shape traced (the fixed shape of a static graph).
        dynamic: batch, height and width are symbolic (one graph for any size in range).
        min_side: smallest height / width of a dynamic graph (every pyramid level must be at
            least 2 x 2 and hold ``num_queries`` positions in all; see :func:`min_input_side`).
        max_side, max_batch: largest height / width and batch of a dynamic graph.
    """

    batch: int
    height: int
    width: int
    dynamic: bool = False
    min_side: int = 32
    max_side: int = DEFAULT_MAX_SIDE
    max_batch: int = DEFAULT_MAX_BATCH

    def trace_shape(self) -> tuple[int, int, int]:
        """The example ``(batch, height, width)``: a dynamic dimension is traced at >= 2
        (torch.export specialises sizes 0 and 1)."""
        if not self.dynamic:
            return self.batch, self.height, self.width
        return max(2, self.batch), max(self.height, self.min_side), max(self.width,
                                                                         self.min_side)


def min_input_side(graph: DetrGraph, limit: int = DEFAULT_MAX_SIDE) -> int:
    """The smallest square side whose pyramid levels are all >= 2 x 2 (torch.export treats
    sizes 0 and 1 as constants) and hold the two-stage selection's ``num_queries`` positions.

    Found by running the backbone and neck on small zero images: doubling, then bisecting.
    """
    def fits(side: int) -> bool:
        with torch.no_grad():
            feats = graph.backbone(torch.zeros(1, 3, side, side))
            feats = graph.neck(feats) if graph.neck is not None else feats
        sizes = [(f.shape[-2], f.shape[-1]) for f in feats]
        return (min(min(s) for s in sizes) >= 2
                and sum(h * w for h, w in sizes) >= graph.head.num_queries)

    low, high = 2, 32
    while not fits(high):
        if high >= limit:
            raise ExportError(f'even {limit} x {limit} inputs give too few feature positions '
                              f'for num_queries={graph.head.num_queries}')
        low, high = high + 1, min(2 * high, limit)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid + 1, high)
    return low


def example_inputs(spec: InputSpec) -> tuple[Tensor, Tensor]:
    """A normalised-looking batch of the traced shape and its image sizes (the first image
    fills the batch, the others are smaller so the padding path is traced)."""
    batch, height, width = spec.trace_shape()
    images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    sizes = [[height, width]] + [[max(2, height - 3 * i), max(2, width - 5 * i)]
                                 for i in range(1, batch)]
    return images, torch.tensor(sizes, dtype=torch.int64)


def dynamic_shapes(spec: InputSpec) -> dict[str, Any] | None:
    """``torch.export`` dynamic dimensions of the two inputs, or None for a static graph."""
    if not spec.dynamic:
        return None
    from torch.export import Dim
    batch = Dim('batch', min=1, max=spec.max_batch)
    height = Dim('height', min=spec.min_side, max=spec.max_side)
    width = Dim('width', min=spec.min_side, max=spec.max_side)
    return {'images': {0: batch, 2: height, 3: width}, 'img_sizes': {0: batch}}


def trace(graph: DetrGraph, spec: InputSpec) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``graph`` (eval mode, no gradients) for ``spec``."""
    graph.eval()
    with torch.no_grad():
        return torch.export.export(graph, example_inputs(spec),
                                   dynamic_shapes=dynamic_shapes(spec), strict=False)


def save_program(program: torch.export.ExportedProgram, path: str | Path,
                 metadata: dict) -> None:
    """``torch.export.save`` with the metadata as the extra file ``codetr.json``."""
    torch.export.save(program, str(path),
                      extra_files={PROGRAM_METADATA_FILE: json.dumps(metadata)})


def save_onnx(program: torch.export.ExportedProgram, path: str | Path, metadata: dict,
              opset: int = DEFAULT_OPSET, fp16: bool = False) -> None:
    """Translate ``program`` to ONNX (one file, weights inside) with the metadata attached.

    ``fp16`` converts weights and activations to float16 with ONNX Runtime's converter,
    keeping the float32 / int64 inputs and outputs (``keep_io_types``) and the top-k and
    box arithmetic at the end in float32.
    """
    args, kwargs = program.example_inputs
    onnx_program = torch.onnx.export(
        program, args, kwargs=kwargs, dynamo=True, opset_version=opset,
        input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), external_data=False,
        optimize=True)
    proto = onnx_program.model_proto
    if fp16:
        proto = to_float16(proto)
    _set_metadata(proto, metadata)
    _save_proto(proto, path)


def to_float16(proto: Any) -> Any:
    """Float16 weights and activations, float32 inputs / outputs and post-processing."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # The top-k over class scores and the box arithmetic after it stay float32: float16 has
    # 11 bits, 0.5 px at 1,000 px.
    block = list(DEFAULT_OP_BLOCK_LIST) + ['TopK']
    return convert_float_to_float16(proto, keep_io_types=True, op_block_list=block)


def _set_metadata(proto: Any, metadata: dict) -> None:
    entry = next((p for p in proto.metadata_props if p.key == METADATA_KEY), None)
    if entry is None:
        entry = proto.metadata_props.add()
        entry.key = METADATA_KEY
    entry.value = json.dumps(metadata)


def _save_proto(proto: Any, path: str | Path) -> None:
    import onnx
    if proto.ByteSize() >= 2**31:
        raise ExportError('the ONNX model is over 2 GB, the protobuf limit of a single file')
    onnx.save_model(proto, str(path))


def read_metadata(path: str | Path) -> dict:
    """The ``codetr`` metadata of an exported ``.onnx`` or ``.pt2`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'exported model not found: {path}')
    if path.suffix == '.onnx':
        import onnx
        proto = onnx.load_model(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        if METADATA_KEY not in props:
            raise ExportError(f'{path} has no codetr metadata: export it with '
                              'tools/deployment/export_onnx.py')
        return json.loads(props[METADATA_KEY])
    extra = {PROGRAM_METADATA_FILE: ''}
    torch.export.load(str(path), extra_files=extra)
    if not extra[PROGRAM_METADATA_FILE]:
        raise ExportError(f'{path} has no {PROGRAM_METADATA_FILE}: export it with '
                          'tools/deployment/export_onnx.py --format torch_export')
    return json.loads(extra[PROGRAM_METADATA_FILE])


def build_metadata(model: nn.Module, graph: DetrGraph, spec: InputSpec, fmt: str, opset: int,
                   fp16: bool, extra: dict | None = None) -> dict:
    """Everything a runtime needs besides the graph: shapes, post-processing, preprocessing."""
    head_cfg = graph.head.test_cfg
    preprocessor = getattr(model, 'data_preprocessor', None)
    meta = dict(
        format=fmt, version=1, head=type(graph.head).__name__,
        inputs={'images': '(B, 3, H, W) float32, normalised, padded at the bottom / right',
                'img_sizes': '(B, 2) int64 (h, w) of each image inside the padding'},
        outputs={'boxes': '(B, K, 4) float32 xyxy in input pixels',
                 'scores': '(B, K) float32, descending', 'labels': '(B, K) int64'},
        top_k=graph.top_k, input_spec=asdict(spec), opset=opset if fmt == 'onnx' else None,
        precision='float16' if fp16 else 'float32',
        postprocess=dict(score_thr=float(head_cfg.get('score_thr', 0.0)),
                         nms=head_cfg.get('nms'),
                         max_per_img=int(head_cfg.get('max_per_img', graph.top_k))),
        preprocess=_preprocess_meta(preprocessor),
        masks_left_out=getattr(model, 'mask_branch', None),
        classes=list((getattr(model, 'dataset_meta', None) or {}).get('classes', ())))
    meta.update(extra or {})
    return json.loads(json.dumps(meta, default=_jsonable))


def _preprocess_meta(preprocessor: nn.Module | None) -> dict:
    if preprocessor is None:
        return {}
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    return dict(mean=mean.flatten().tolist() if mean is not None else None,
                std=std.flatten().tolist() if std is not None else None,
                bgr_to_rgb=bool(getattr(preprocessor, '_channel_conversion', False)),
                pad_size_divisor=int(getattr(preprocessor, 'pad_size_divisor', 1)),
                pad_value=float(getattr(preprocessor, 'pad_value', 0)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def export_model(model: nn.Module, paths: dict[str, str | Path], spec: InputSpec,
                 opset: int = DEFAULT_OPSET, fp16: bool = False,
                 extra_metadata: dict | None = None) -> dict[str, dict]:
    """Trace ``model``'s inference graph once and write it in each format of ``paths``
    (``{'onnx': 'm.onnx', 'torch_export': 'm.pt2'}``; files are replaced atomically).

    Returns:
        ``{format: metadata stored in that file}``.

    Raises:
        ExportError: unsupported model or options (the message says what to change).
    """
    unknown = set(paths) - set(FORMATS)
    if unknown:
        raise ExportError(f'format {sorted(unknown)} is not one of {FORMATS}')
    if 'onnx' in paths and opset < MIN_OPSET:
        raise ExportError(f'--opset {opset} is too old: the deformable attention needs '
                          f'GridSample (opset >= {MIN_OPSET})')
    if fp16 and 'torch_export' in paths:
        raise ExportError('--fp16 makes a float16 ONNX graph (for GPU runtimes); for '
                          '--format torch_export run the program under torch.autocast instead')
    graph = DetrGraph(model)
    if spec.dynamic:
        spec = InputSpec(**{**asdict(spec), 'min_side': min_input_side(graph, spec.max_side)})
    program = trace(graph, spec)
    written = {}
    for fmt, path in paths.items():
        metadata = build_metadata(model, graph, spec, fmt, opset, fp16, extra_metadata)
        with _atomic_path(Path(path)) as tmp:
            if fmt == 'onnx':
                save_onnx(program, tmp, metadata, opset, fp16)
            else:
                save_program(program, tmp, metadata)
        written[fmt] = metadata
    return written


@contextmanager
def _atomic_path(path: Path) -> Iterator[str]:
    """A temporary name beside ``path``, renamed to it if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=f'.tmp{path.suffix}',
                                   dir=path.parent)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
