"""The command behind ``tools/deployment/export_onnx.py``: export, then optionally verify."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmengine.config import Config, DictAction

from .checks import ExportError, left_out_masks
from .export import (
    DEFAULT_MAX_SIDE,
    DEFAULT_OPSET,
    FORMATS,
    MIN_OPSET,
    InputSpec,
    export_model,
)

VERIFY_IMAGES = 8
SUFFIXES = {'onnx': '.onnx', 'torch_export': '.pt2'}


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a Co-DINO / Co-Deformable-DETR's inference graph (backbone, neck, "
                    'encoder, decoder, top-k) to ONNX or a torch.export program')
    parser.add_argument('config', help='the model config')
    parser.add_argument('checkpoint', help='its checkpoint (codetr layout; convert official '
                        'ones with tools/model_converters/ first)')
    parser.add_argument('--out', required=True, help='output file (.onnx or .pt2)')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='onnx or torch_export (default: from the --out suffix)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset (>= 16)')
    parser.add_argument('--dynamic-shape', action='store_true',
                        help='symbolic batch, height and width: one file for any input size')
    parser.add_argument('--batch', type=int, default=1, help='batch size of a static graph '
                        '(and of the traced example / --verify batches)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help="input size of a static graph (default: the test pipeline's "
                        'largest resized image)')
    parser.add_argument('--max-side', type=int, default=DEFAULT_MAX_SIDE,
                        help='largest height / width a dynamic graph accepts')
    parser.add_argument('--fp16', action='store_true', help='float16 ONNX graph (GPU runtimes)')
    parser.add_argument('--verify', action='store_true', help='compare the exported model '
                        'with PyTorch on real images and print the largest differences')
    parser.add_argument('--verify-images', nargs='+', default=None,
                        help='images, folders or globs for --verify (default: the config\'s '
                        'test set)')
    parser.add_argument('--verify-num', type=int, default=VERIFY_IMAGES,
                        help='how many images --verify uses')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.test_cfg.eval_module=detr')
    return parser


def _fail(message: str) -> None:
    raise SystemExit(f'export_onnx.py: error: {message}')


def default_input_shape(cfg: Config) -> tuple[int, int]:
    """(H, W) of the largest image the test pipeline's ``Resize`` makes (landscape), rounded
    up to the data preprocessor's size divisor."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    scale = next((step['scale'] for step in pipeline
                  if step.get('type') == 'Resize' and step.get('scale')), (1333, 800))
    if isinstance(scale, int):
        scale = (scale, scale)
    divisor = int(cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 1) or 1)
    height, width = min(scale), max(scale)
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def _verify_images(cfg: Config, given: list[str] | None, num: int) -> list[str]:
    from codetr.apis import expand_inputs
    if given:
        return [str(p) for p in expand_inputs(given)][:num]
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    folder = Path(dataset.get('data_root', '') or '', (dataset.get('data_prefix') or {})
                  .get('img', ''))
    if not folder.is_dir():
        _fail(f'--verify found no test images at {folder} (the config\'s test set): pass '
              '--verify-images IMAGES')
    return [str(p) for p in expand_inputs(str(folder))][:num]


def verify(model, path: str, fmt: str, images: list[str], batch: int) -> bool:
    """Print per-image and overall differences between ``model`` and the exported file."""
    from codetr.apis import build_test_pipeline
    from codetr.apis.inference import pack_images

    from .runtime import load_deployed
    from .verify import tolerances_for, verify_on_batches

    deployed = load_deployed(path, model.cfg, backend='onnxruntime' if fmt == 'onnx'
                             else 'export')
    pipeline = build_test_pipeline(model.cfg, from_array=False)
    batches = [pack_images(pipeline, images[i:i + batch]) for i in range(0, len(images), batch)]
    report = verify_on_batches(model, deployed, batches)
    tol = tolerances_for(deployed)
    print(f'verify: {len(images)} images, detections scoring > 0.05 (tolerances: boxes '
          f'{tol["box_atol"]:g} px, scores {tol["score_atol"]:g}'
          f'{", float16 graph" if deployed.metadata.get("precision") == "float16" else ""})')
    for name, count, box, score in report.per_image:
        print(f'  {Path(name).name}: {count} compared, max box diff {box:.3g} px, '
              f'max score diff {score:.3g}')
    for failure in report.failures[:10]:
        print(f'  mismatch: {failure}')
    print(f'verify: {report.summary()}')
    return report.ok


def export_main(argv: list[str] | None = None) -> int:
    args = export_parser().parse_args(argv)
    out = Path(args.out)
    fmt = args.format or ('torch_export' if out.suffix == '.pt2' else 'onnx')
    if out.exists() and not args.force:
        _fail(f'{out} exists; pass --force to overwrite it')
    if out.suffix != SUFFIXES[fmt]:
        _fail(f'--out {out} should end in {SUFFIXES[fmt]} for --format {fmt}')
    if args.batch < 1:
        _fail(f'--batch must be >= 1, got {args.batch}')
    if fmt == 'onnx' and args.opset < MIN_OPSET:
        _fail(f'--opset {args.opset} is too old: the deformable attention needs GridSample '
              f'(opset >= {MIN_OPSET})')
    if args.fp16 and fmt != 'onnx':
        _fail('--fp16 makes a float16 ONNX graph (for GPU runtimes); for --format '
              'torch_export run the program under torch.autocast instead')
    from codetr.apis import init_detector
    try:
        model = init_detector(args.config, args.checkpoint, device='cpu',
                              cfg_options=args.cfg_options)
        note = left_out_masks(model)
        if note:
            print(f'export_onnx.py: note: {note}')
        height, width = args.shape or default_input_shape(model.cfg)
        spec = InputSpec(batch=args.batch, height=height, width=width,
                         dynamic=args.dynamic_shape, max_side=args.max_side)
        metadata = export_model(model, {fmt: out}, spec, opset=args.opset, fp16=args.fp16,
                                extra_metadata=dict(config=str(args.config),
                                                    checkpoint=str(args.checkpoint)))[fmt]
    except (ExportError, FileNotFoundError) as err:
        _fail(str(err))
    spec = metadata['input_spec']
    shape = ('dynamic: batch 1..{max_batch}, height / width {min_side}..{max_side}'
             .format(**spec) if spec['dynamic']
             else f'static: batch {spec["batch"]}, {spec["height"]} x {spec["width"]}')
    print(f'exported {fmt} to {out} ({shape}; top {metadata["top_k"]} per image; '
          f'post-processing after the graph: {metadata["postprocess"]})')
    if args.verify:
        images = _verify_images(model.cfg, args.verify_images, args.verify_num)
        if not verify(model, str(out), fmt, images, args.batch):
            return 1
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(export_main())
