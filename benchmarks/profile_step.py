"""Profile one training step (or one predict call) of a config's model with torch.profiler;
prints the top operators by self CPU time and the time per category as one JSON object.

    python benchmarks/profile_step.py CONFIG [--batch-size 2] [--img-size 320] [--num-gt 3]
        [--threads N] [--warmup 1] [--amp] [--predict] [--top 30] [--cfg-options k=v ...]

Categories (``categories_s``): ``matrix`` (mm, addmm, bmm, baddbmm, linear), ``convolution``
(forward and backward), ``deform_attn`` (the deformable-attention kernels or grid_sample),
``elementwise`` (activations, their backward, arithmetic), ``copy`` (copy_, fill_,
contiguous, cat...), ``roi_align``, ``other``. A profile slows the step down a little; use
the proportions, and train_step.py for times.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from mmengine.config import DictAction
from mmengine.optim import build_optim_wrapper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import build_model, load_config, num_classes_of, synthetic_batch  # noqa: E402
from train_step import amp_options  # noqa: E402

CATEGORIES = {
    'matrix': ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm', 'aten::_addmm_activation'),
    'convolution': ('aten::mkldnn_convolution', 'aten::convolution_backward',
                    'aten::_slow_conv2d_forward', 'aten::_slow_conv2d_backward',
                    'aten::thnn_conv2d', 'aten::_convolution'),
    'deform_attn': ('codetr_msda::forward', 'codetr_msda::backward', 'aten::grid_sampler_2d',
                    'aten::grid_sampler_2d_backward', 'aten::_embedding_bag'),
    'roi_align': ('torchvision::roi_align', 'torchvision::_roi_align_backward'),
    'copy': ('aten::copy_', 'aten::fill_', 'aten::zero_', 'aten::cat', 'aten::clone',
             'aten::index', 'aten::index_put_', 'aten::_index_put_impl_', 'aten::gather',
             'aten::scatter_add_', 'aten::index_select', 'aten::masked_fill_', 'aten::stack',
             'aten::_to_copy', 'aten::where', 'aten::constant_pad_nd'),
    'elementwise': ('aten::relu', 'aten::relu_', 'aten::threshold_backward', 'aten::mul',
                    'aten::mul_', 'aten::add', 'aten::add_', 'aten::sub', 'aten::div',
                    'aten::addcmul_', 'aten::sigmoid', 'aten::sigmoid_backward', 'aten::exp',
                    'aten::softmax', 'aten::_softmax', 'aten::_softmax_backward_data',
                    'aten::native_layer_norm', 'aten::native_layer_norm_backward',
                    'aten::native_group_norm', 'aten::native_group_norm_backward',
                    'aten::sum', 'aten::clamp', 'aten::neg', 'aten::pow', 'aten::sqrt',
                    'aten::_foreach_mul_', 'aten::_foreach_add_', 'aten::_foreach_addcmul_',
                    'aten::_foreach_addcdiv_', 'aten::_foreach_sqrt', 'aten::_foreach_div_',
                    'aten::_foreach_lerp_', 'aten::_foreach_norm', 'aten::linalg_vector_norm',
                    'aten::log', 'aten::abs', 'aten::_log_softmax', 'aten::max_pool2d_with_indices',
                    'aten::max_pool2d_with_indices_backward', 'aten::native_batch_norm',
                    'aten::_native_batch_norm_legit_no_training'),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=320)
    parser.add_argument('--num-gt', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--predict', action='store_true', help='profile model.predict')
    parser.add_argument('--top', type=int, default=30)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def category_of(name: str) -> str:
    for category, names in CATEGORIES.items():
        if name in names:
            return category
    return 'other'


def profile(args: argparse.Namespace) -> dict:
    """Warm up, then profile one step; ``{top_ops, categories_s, total_self_s}``."""
    args.device = 'cpu'
    cfg = load_config(args.config, {**args.cfg_options, **amp_options(args)})
    torch.manual_seed(0)
    model = build_model(cfg, torch.device('cpu'))
    raw = synthetic_batch(args.batch_size, args.img_size, args.num_gt, num_classes_of(model))
    if args.predict:
        model.eval()
        data = model.data_preprocessor(raw, training=False)

        def step() -> None:
            with torch.no_grad():
                model(**data, mode='predict')
    else:
        model.train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        data = model.data_preprocessor(raw, training=True)

        def step() -> None:
            with optim_wrapper.optim_context(model):
                losses = model(**data, mode='loss')
            loss, _ = model.parse_losses(losses)
            optim_wrapper.update_params(loss)
    for _ in range(args.warmup):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    categories: dict[str, float] = defaultdict(float)
    rows = []
    for event in events:
        self_s = event.self_cpu_time_total / 1e6
        categories[category_of(event.key)] += self_s
        rows.append((self_s, event.key, event.count))
    rows.sort(reverse=True)
    total = sum(categories.values())
    return {
        'benchmark': 'profile_step', 'config': args.config, 'mode': 'predict' if args.predict
        else 'train', 'threads': torch.get_num_threads(), 'amp': args.amp,
        'total_self_s': round(total, 3),
        'categories_s': {k: round(v, 3) for k, v in sorted(categories.items(),
                                                            key=lambda kv: -kv[1])},
        'top_ops': [{'op': name, 'self_s': round(s, 4), 'calls': n}
                    for s, name, n in rows[:args.top]],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = profile(args)
    for row in result['top_ops']:
        print(f"{row['self_s']:9.3f} s {row['calls']:6d}  {row['op']}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
