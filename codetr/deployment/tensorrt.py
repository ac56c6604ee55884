"""Build a TensorRT engine from an exported ONNX file.

The graph's inputs are ``images`` (B, 3, H, W) and ``img_sizes`` (B, 2); a dynamic graph
needs an optimisation profile (min / opt / max shapes) for both, which
:func:`profile_shapes` derives from the file's ``codetr`` metadata (the range the graph was
exported for) unless given. :func:`trtexec_command` writes the equivalent ``trtexec`` call;
:func:`build_engine` uses TensorRT's Python builder and needs a CUDA GPU.
"""
from __future__ import annotations

from pathlib import Path

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]
# Batch ceiling of the default profile: TensorRT sizes its buffers for the max shape.
DEFAULT_MAX_BATCH = 8


def profile_shapes(metadata: dict, min_shape: Shape | None = None,
                   opt_shape: Shape | None = None, max_shape: Shape | None = None) -> Profile:
    """``{input: (min, opt, max)}`` for ``images`` and ``img_sizes``.

    Args:
        metadata: the exported file's ``codetr`` metadata (``input_spec``).
        min_shape, opt_shape, max_shape: ``(B, H, W)`` overriding the defaults: for a
            dynamic graph batch 1 at its smallest side / the traced example / batch
            ``min(8, max_batch)`` at its largest side; a static graph allows only its shape.

    Raises:
        ValueError: shapes out of order, outside the exported range, or different from a
            static graph's shape.
    """
    spec = metadata['input_spec']
    fixed = (spec['batch'], spec['height'], spec['width'])
    if spec['dynamic']:
        defaults = ((1, spec['min_side'], spec['min_side']),
                    (spec['batch'], spec['height'], spec['width']),
                    (min(DEFAULT_MAX_BATCH, spec['max_batch']), spec['max_side'],
                     spec['max_side']))
    else:
        defaults = (fixed, fixed, fixed)
    shapes = [tuple(given) if given is not None else default
              for given, default in zip((min_shape, opt_shape, max_shape), defaults)]
    _check_profile(shapes, spec, fixed)
    return {'images': tuple((b, 3, h, w) for b, h, w in shapes),
            'img_sizes': tuple((b, 2) for b, _, _ in shapes)}


def _check_profile(shapes: list[Shape], spec: dict, fixed: Shape) -> None:
    for shape in shapes:
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f'profile shapes are (B, H, W) of positive ints, got {shape}')
    if not spec['dynamic']:
        if any(tuple(s) != fixed for s in shapes):
            raise ValueError(f'the graph was exported with the static shape {fixed}: re-export '
                             'with --dynamic-shape for a range of shapes')
        return
    for low, high in zip(shapes, shapes[1:]):
        if any(a > b for a, b in zip(low, high)):
            raise ValueError(f'profile shapes must satisfy min <= opt <= max, got {shapes}')
    low, high = shapes[0], shapes[-1]
    if min(low[1:]) < spec['min_side'] or max(high[1:]) > spec['max_side'] \
            or high[0] > spec['max_batch']:
        raise ValueError(f'profile {shapes} leaves the exported range: sides '
                         f'{spec["min_side"]}..{spec["max_side"]}, batch 1..{spec["max_batch"]}')


def _dims(shape: Shape) -> str:
    return 'x'.join(str(d) for d in shape)


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, profile: Profile,
                    fp16: bool = False, workspace_mb: int = 4096) -> list[str]:
    """The ``trtexec`` arguments building the same engine as :func:`build_engine`."""
    flags = {'min': 0, 'opt': 1, 'max': 2}
    cmd = ['trtexec', f'--onnx={onnx_path}', f'--saveEngine={engine_path}',
           f'--memPoolSize=workspace:{workspace_mb}M']
    for flag, index in flags.items():
        cmd.append(f'--{flag}Shapes=' + ','.join(f'{name}:{_dims(shapes[index])}'
                                                 for name, shapes in profile.items()))
    if fp16:
        cmd.append('--fp16')
    return cmd


def build_engine(onnx_path: str | Path, engine_path: str | Path, profile: Profile,
                 fp16: bool = False, workspace_mb: int = 4096) -> Path:
    """Parse the ONNX file, add the profile and serialise an engine (needs TensorRT and a
    CUDA GPU).

    Raises:
        RuntimeError: TensorRT is missing, no GPU is usable, or the parser / builder fails.
    """
    try:
        import tensorrt as trt
    except ImportError as err:
        raise RuntimeError('building an engine needs the tensorrt package and a CUDA GPU '
                           '(pip install tensorrt); without them, run the trtexec command '
                           'printed by --print-command on a GPU machine') from err
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder is None:
        raise RuntimeError('TensorRT found no usable CUDA GPU')
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * 2**20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        optimisation.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimisation)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path}')
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(engine))
    return engine_path
