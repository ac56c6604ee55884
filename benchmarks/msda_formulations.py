"""The deformable-attention core in ONNX Runtime: standard-operator formulations against the
eager fused kernel, at one layer's shapes; prints one JSON object.

    python benchmarks/msda_formulations.py [--img-size 320 | 800x1333] [--queries 900]
        [--batch 1] [--iters 5] [--formulations grid_sample gather_level ...]

Shapes are Co-DINO R50's (8 heads of 32 channels, 5 levels at strides 4 to 64, 4 points);
``--queries 0`` (the default) is an encoder layer (every level position a query, sampling
around its own centre), ``--queries N`` a decoder layer (N random reference points).
Offsets are about 2 pixels of each level, some points fall outside the maps. Each
formulation is checked against the eager kernel (``max_abs_err``), exported (torch.export,
then the dynamo ONNX exporter at opset 18) and run by ONNX Runtime at one thread
(extended optimisations, no memory arena); the calls alternate between the eager kernel
and every session, and the medians are reported with their ratio to the kernel, with
each one's rise of the resident set over one call (``peak_growth_mb``).

Formulations (``value`` (B, S, H, D); locations (B, Q, H, L, P, 2); weights (B, Q, H, L, P)):

- ``grid_sample``: what the export uses (``codetr.deployment.msda``): one ``GridSample``
  per level over (B * H, D, h, w), times the weights, summed over points;
- ``grid_sample_point``: one ``GridSample`` per level and point (grid (B * H, 1, Q, 2)),
  each sample weighted and added in turn: no (B * H, D, P, Q) intermediate;
- ``gather_corner``: the four bilinear corners of each level read as rows of the value
  table (B * S * H, D) with ``Gather``; a corner outside the map gets weight zero; each
  corner's rows are weighted (bilinear times attention weight) and summed over points
  (20 gathers a layer);
- ``gather_level``: as ``gather_corner`` with the four corners of a level in one gather,
  reduced by one batched ``MatMul`` ((1, 4P) @ (4P, D) per query and head);
- ``gather_padded``: each level framed by a zero border, coordinates clamped into the frame
  (no validity masks: a clamped point reads the border), one gather and ``MatMul`` per
  level.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from codetr.cpu_runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()  # as the other benchmarks: before torch loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from backends import parse_img_size  # noqa: E402
from common import median  # noqa: E402
from torch import Tensor  # noqa: E402

from codetr.deployment.msda import ms_deform_attn_grid_sample  # noqa: E402

Shapes = list[tuple[int, int]]
HEADS, DIMS, POINTS = 8, 32, 4


def level_shapes(img_size: int | tuple[int, int]) -> Shapes:
    """The 5 level sizes of a ResNet + ChannelMapper pyramid (strides 4 to 64)."""
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    shapes = [(-(-height // s), -(-width // s)) for s in (4, 8, 16, 32)]
    shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    return shapes


def make_inputs(shapes: Shapes, queries: int, batch: int = 1,
                seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """value (B, S, H, D), locations (B, Q, H, L, P, 2), weights (B, Q, H, L, P)."""
    gen = torch.Generator().manual_seed(seed)
    num_value, levels = sum(h * w for h, w in shapes), len(shapes)
    if queries == 0:  # encoder: each position's centre is its reference point
        refs = []
        for height, width in shapes:
            ys, xs = torch.meshgrid((torch.arange(height) + 0.5) / height,
                                    (torch.arange(width) + 0.5) / width, indexing='ij')
            refs.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
        ref = torch.cat(refs)[None].expand(batch, -1, -1)
    else:
        ref = torch.rand(batch, queries, 2, generator=gen)
    num_queries = ref.shape[1]
    wh = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float)
    offsets = torch.randn(batch, num_queries, HEADS, levels, POINTS, 2, generator=gen)
    locations = ref[:, :, None, None, None, :] + offsets * 2.0 / wh[:, None, :]
    weights = torch.rand(batch, num_queries, HEADS, levels * POINTS, generator=gen)
    weights = weights.softmax(-1).view(batch, num_queries, HEADS, levels, POINTS)
    value = torch.randn(batch, num_value, HEADS, DIMS, generator=gen)
    return value, locations, weights


def grid_sample(value: Tensor, shapes: Shapes, loc: Tensor, attn: Tensor) -> Tensor:
    batch, num_queries, heads, levels, points, _ = loc.shape
    grids = [(2 * loc[:, :, :, lv] - 1).permute(0, 2, 3, 1, 4).reshape(
        batch * heads, points, num_queries, 2) for lv in range(levels)]
    weights = [attn[:, :, :, lv].permute(0, 2, 3, 1).reshape(
        batch * heads, 1, points, num_queries) for lv in range(levels)]
    return ms_deform_attn_grid_sample(value, shapes, grids, weights)


def grid_sample_point(value: Tensor, shapes: Shapes, loc: Tensor, attn: Tensor) -> Tensor:
    batch, num_queries, heads, levels, points, _ = loc.shape
    _, _, _, dims = value.shape
    value_t = value.permute(0, 2, 3, 1).reshape(batch * heads, dims, -1)
    grid = (2 * loc - 1).permute(0, 2, 3, 4, 1, 5).reshape(batch * heads, levels * points, 1,
                                                          num_queries, 2)
    weight = attn.permute(0, 2, 3, 4, 1).reshape(batch * heads, levels * points, 1, 1,
                                                 num_queries)
    out, start = None, 0
    for level, (height, width) in enumerate(shapes):
        level_value = value_t[:, :, start:start + height * width].reshape(
            batch * heads, dims, height, width)
        for point in range(points):
            k = level * points + point
            term = F.grid_sample(level_value, grid[:, k], mode='bilinear',
                                 padding_mode='zeros', align_corners=False) * weight[:, k]
            out = term if out is None else out + term  # [B*H, D, 1, Q]
        start += height * width
    return out.view(batch, heads * dims, num_queries).transpose(1, 2)


def _corners(loc: Tensor, attn: Tensor, height: int, width: int, start: int,
             heads: int) -> tuple[list[Tensor], list[Tensor]]:
    """Row indices (of (B * S * H, D), batch offset not added) and weights of the 4 corners
    of one level, each (B, Q, H, P); corners outside the map get weight zero."""
    x = loc[..., 0] * width - 0.5
    y = loc[..., 1] * height - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    head = torch.arange(heads).view(1, 1, heads, 1)
    indices, weights = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            inside = ((xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)).to(attn.dtype)
            weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy) * attn * inside
            row = start + yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)
            indices.append(row * heads + head)
            weights.append(weight)
    return indices, weights


def gather(value: Tensor, shapes: Shapes, loc: Tensor, attn: Tensor,
           per_level: bool) -> Tensor:
    batch, num_value, heads, dims = value.shape
    table = value.reshape(batch * num_value * heads, dims)
    batch_offset = (torch.arange(batch) * (num_value * heads)).view(batch, 1, 1, 1)
    out, start = None, 0
    for level, (height, width) in enumerate(shapes):
        indices, weights = _corners(loc[:, :, :, level], attn[:, :, :, level], height, width,
                                    start, heads)
        if per_level:
            indices, weights = [torch.cat(indices, -1)], [torch.cat(weights, -1)]
        for index, weight in zip(indices, weights):
            rows = F.embedding(index + batch_offset, table)  # [B, Q, H, K, D]
            if per_level:
                term = torch.matmul(weight.unsqueeze(-2), rows).squeeze(-2)
            else:
                term = (rows * weight.unsqueeze(-1)).sum(3)
            out = term if out is None else out + term
        start += height * width
    return out.flatten(2)


def gather_padded(value: Tensor, shapes: Shapes, loc: Tensor, attn: Tensor) -> Tensor:
    batch, _, heads, dims = value.shape
    framed, starts, start, framed_start = [], [], 0, 0
    for height, width in shapes:
        level = value[:, start:start + height * width].reshape(batch, height, width,
                                                               heads * dims)
        framed.append(F.pad(level, (0, 0, 1, 1, 1, 1)).flatten(1, 2))
        starts.append(framed_start)
        start += height * width
        framed_start += (height + 2) * (width + 2)
    table = torch.cat(framed, 1).reshape(-1, dims)
    batch_offset = (torch.arange(batch) * (framed_start * heads)).view(batch, 1, 1, 1)
    head = torch.arange(heads).view(1, 1, heads, 1)
    out = None
    for level, (height, width) in enumerate(shapes):
        x = (loc[:, :, :, level, :, 0] * width - 0.5).clamp(-1, width)
        y = (loc[:, :, :, level, :, 1] * height - 0.5).clamp(-1, height)
        x0, y0 = x.floor().clamp(max=width - 1), y.floor().clamp(max=height - 1)
        fx, fy = x - x0, y - y0
        top, bottom = attn[:, :, :, level] * (1 - fy), attn[:, :, :, level] * fy
        row = starts[level] + (y0.long() + 1) * (width + 2) + x0.long() + 1
        base = batch_offset + row * heads + head
        step = (width + 2) * heads
        index = torch.cat([base, base + heads, base + step, base + step + heads], -1)
        weight = torch.cat([top * (1 - fx), top * fx, bottom * (1 - fx), bottom * fx], -1)
        rows = F.embedding(index, table)
        term = torch.matmul(weight.unsqueeze(-2), rows).squeeze(-2)
        out = term if out is None else out + term
    return out.flatten(2)


FORMULATIONS: dict[str, Callable[..., Tensor]] = {
    'grid_sample': grid_sample,
    'grid_sample_point': grid_sample_point,
    'gather_corner': lambda v, s, loc, a: gather(v, s, loc, a, per_level=False),
    'gather_level': lambda v, s, loc, a: gather(v, s, loc, a, per_level=True),
    'gather_padded': gather_padded,
}


class _Core(torch.nn.Module):
    def __init__(self, fn: Callable[..., Tensor], shapes: Shapes) -> None:
        super().__init__()
        self.fn, self.shapes = fn, shapes

    def forward(self, value: Tensor, loc: Tensor, attn: Tensor) -> Tensor:
        return self.fn(value, self.shapes, loc, attn)


def onnx_session(module: torch.nn.Module, inputs: tuple[Tensor, ...]):
    """An ONNX Runtime session (1 thread) of ``module`` exported as the deployment does."""
    import onnxruntime as ort
    program = torch.export.export(module, inputs, strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        proto = torch.onnx.export(program, inputs, dynamo=True, opset_version=18,
                                  optimize=True, verbose=False).model_proto
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=['CPUExecutionProvider'])
    return session, len(proto.graph.node)


def _status_mb(field: str) -> float:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    return float('nan')


def _call_growth_mb(call: Callable[[], object]) -> float | None:
    """How far the resident set rises over one call (Linux: the high-water mark is reset to
    the current RSS first); None where it cannot be reset."""
    try:
        with open('/proc/self/clear_refs', 'w') as refs:
            refs.write('5')
    except OSError:
        return None
    before = _status_mb('VmRSS')
    call()
    return round(_status_mb('VmHWM') - before, 1)


def run(img_size: int | tuple[int, int], queries: int, batch: int, iters: int,
        names: list[str]) -> dict:
    from codetr.models.layers.ms_deform_attn import ms_deform_attn
    torch.set_num_threads(1)
    shapes = level_shapes(img_size)
    value, loc, attn = make_inputs(shapes, queries, batch)
    spatial = torch.tensor(shapes)
    starts = torch.cat([spatial.new_zeros(1), (spatial[:, 0] * spatial[:, 1]).cumsum(0)[:-1]])

    def kernel() -> Tensor:
        return ms_deform_attn(value, spatial, starts, loc, attn)

    expected = kernel()
    calls: dict[str, Callable[[], object]] = {'eager_kernel': kernel}
    report: dict[str, dict] = {'eager_kernel': {}}
    for name in names:
        module = _Core(FORMULATIONS[name], shapes)
        session, nodes = onnx_session(module, (value, loc, attn))
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (value, loc, attn))}
        got = torch.from_numpy(session.run(None, feed)[0])
        report[name] = {'max_abs_err': float((got - expected).abs().max()), 'nodes': nodes}
        calls[name] = lambda session=session, feed=feed: session.run(None, feed)
    for name, call in calls.items():  # transient memory of one call, from a fresh high mark
        report[name]['peak_growth_mb'] = _call_growth_mb(call)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iters):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    base = median(times['eager_kernel'])
    for name, ts in times.items():
        report[name].update(ms=round(1000 * median(ts), 2), vs_kernel=round(median(ts) / base, 2))
    return {'benchmark': 'msda_formulations', 'shapes': shapes, 'batch': batch,
            'queries': loc.shape[1], 'num_value': value.shape[1], 'iters': iters,
            'runs': report}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=parse_img_size, default=320)
    parser.add_argument('--queries', type=int, default=0,
                        help='0: an encoder layer; N: a decoder layer of N queries')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--formulations', nargs='+', choices=sorted(FORMULATIONS),
                        default=list(FORMULATIONS))
    args = parser.parse_args(argv)
    result = run(args.img_size, args.queries, args.batch, args.iters, args.formulations)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
