"""Build a TensorRT engine from an exported ONNX file (needs TensorRT and a CUDA GPU).

    python tools/deployment/build_trt_engine.py model.onnx --engine model.engine [--fp16]
        [--min-shape B H W] [--opt-shape B H W] [--max-shape B H W] [--workspace-mb 4096]
        [--print-command]

The optimisation profile defaults to the range the file was exported for (its metadata);
``--print-command`` prints the equivalent ``trtexec`` call and builds nothing.
"""
from __future__ import annotations

import argparse
import shlex
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Build a TensorRT engine from an ONNX export')
    parser.add_argument('onnx', help='file written by tools/deployment/export_onnx.py')
    parser.add_argument('--engine', required=True, help='where the serialised engine goes')
    parser.add_argument('--fp16', action='store_true', help='allow float16 kernels')
    for which in ('min', 'opt', 'max'):
        parser.add_argument(f'--{which}-shape', type=int, nargs=3, metavar=('B', 'H', 'W'),
                            help=f'{which} input shape of the optimisation profile')
    parser.add_argument('--workspace-mb', type=int, default=4096, help='builder workspace')
    parser.add_argument('--print-command', action='store_true',
                        help='print the trtexec command for this profile and exit')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from codetr.deployment.export import read_metadata
    from codetr.deployment.tensorrt import build_engine, profile_shapes, trtexec_command

    try:
        profile = profile_shapes(read_metadata(args.onnx), args.min_shape, args.opt_shape,
                                 args.max_shape)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f'build_trt_engine.py: error: {err}') from err
    command = trtexec_command(args.onnx, args.engine, profile, args.fp16, args.workspace_mb)
    if args.print_command:
        print(shlex.join(command))
        return 0
    try:
        engine = build_engine(args.onnx, args.engine, profile, args.fp16, args.workspace_mb)
    except RuntimeError as err:
        raise SystemExit(f'build_trt_engine.py: error: {err}\nequivalent command: '
                         f'{shlex.join(command)}') from err
    print(f'engine written to {engine}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
