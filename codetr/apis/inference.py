"""Build a detector from a config and checkpoint, and run it on images.

``init_detector`` and ``inference_detector`` behave as MMDetection's: the model gets the
config (``model.cfg``) and the class names (``model.dataset_meta``), and images go through
the config's test pipeline without its annotation loading.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from codetr.engine.checkpoint import CheckpointError, load_checkpoint
from codetr.registry import DATASETS, MODELS, TRANSFORMS
from codetr.structures import DetDataSample
from codetr.utils import register_all_modules, resolve_config

ImageInput = str | Path | np.ndarray
# Pipeline steps that read annotations, which inference images do not have.
ANNOTATION_TRANSFORMS = ('LoadAnnotations',)


class LoadImageFromArray(BaseTransform):
    """Take ``results['img']`` (an ``(H, W, 3)`` uint8 BGR array) as the loaded image.

    Stands in for ``LoadImageFromFile`` when the inputs are arrays: sets ``img_shape`` and
    ``ori_shape`` ``(H, W)`` as that transform does.
    """

    def transform(self, results: dict) -> dict:
        img = results['img']
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            raise TypeError(f'inference images must be file paths or (H, W, 3) BGR arrays, '
                            f'got {type(img).__name__} {getattr(img, "shape", "")}')
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


def _as_config(config: str | Path | Config, cfg_options: dict | None) -> Config:
    if isinstance(config, (str, Path)):
        # a path, a path inside the configs folder or a short name (codetr.utils.config_path)
        cfg = Config.fromfile(resolve_config(config))
    elif isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        raise TypeError(f'config must be a file path or a Config, got {type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def init_detector(config: str | Path | Config, checkpoint: str | None = None,
                  device: str = 'cpu', cfg_options: dict | None = None) -> nn.Module:
    """A detector in eval mode, with ``model.cfg`` and ``model.dataset_meta`` set.

    Args:
        config: a config file, a short config name (``co_dino_5scale_r50_8xb2_1x_coco``,
            see :func:`codetr.utils.resolve_config`) or a loaded ``Config``.
        checkpoint: a local ``.pth``; ``None`` keeps the initial weights.
        device: where the model goes, e.g. ``'cpu'`` or ``'cuda:0'``.
        cfg_options: overrides merged into the config (``--cfg-options`` style keys).

    The class names come from the checkpoint's ``meta['dataset_meta']`` (written by the
    training runner), else from the config's test dataset ``metainfo``, else from its dataset
    class; without any, ``dataset_meta`` is ``None`` and a warning says so.
    """
    cfg = _as_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'codetr'))
    register_all_modules(init_default_scope=False)
    model = MODELS.build(cfg.model)
    checkpoint_meta = None
    if checkpoint is not None:
        checkpoint_meta = _load_weights(model, checkpoint, config)
    model.cfg = cfg
    model.dataset_meta = checkpoint_meta or _config_dataset_meta(cfg)
    if model.dataset_meta is None:
        warnings.warn('no class names in the checkpoint meta or the config; predictions are '
                      'labelled by index. Save checkpoints with the training runner or set '
                      'test_dataloader.dataset.metainfo=dict(classes=(...)).', stacklevel=2)
    return model.to(device).eval()


def _load_weights(model: nn.Module, checkpoint: str, config: Any) -> dict | None:
    """Load the state dict (warning about partial matches); return ``meta['dataset_meta']``."""
    ckpt = load_checkpoint(str(checkpoint), map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    if state and all(k.startswith('module.') for k in state):  # saved from a DDP wrapper
        state = {k[len('module.'):]: v for k, v in state.items()}
    own = model.state_dict()
    if not set(state) & set(own):
        raise CheckpointError(f'checkpoint {checkpoint} shares no parameter names with the '
                              f'model built from {config}; is it the checkpoint of this '
                              'config (or does it need tools/model_converters/)?')
    incompatible = model.load_state_dict(state, strict=False)
    if incompatible.missing_keys or incompatible.unexpected_keys:
        warnings.warn(f'checkpoint {checkpoint}: {len(incompatible.missing_keys)} model keys '
                      f'missing (e.g. {incompatible.missing_keys[:3]}), '
                      f'{len(incompatible.unexpected_keys)} unexpected (e.g. '
                      f'{incompatible.unexpected_keys[:3]})', stacklevel=3)
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    dataset_meta = meta.get('dataset_meta')
    return dict(dataset_meta) if dataset_meta and dataset_meta.get('classes') else None


def _config_dataset_meta(cfg: Config) -> dict | None:
    """``metainfo`` of the config's test dataset, or its dataset class's ``METAINFO``."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    metainfo = dataset.get('metainfo')
    if metainfo and metainfo.get('classes'):
        return dict(metainfo)
    dataset_cls = DATASETS.get(dataset['type']) if 'type' in dataset else None
    default = getattr(dataset_cls, 'METAINFO', None)
    return dict(default) if default and default.get('classes') else None


def build_test_pipeline(cfg: Config, from_array: bool) -> list[BaseTransform]:
    """The config's test pipeline without annotation loading, reading arrays if asked.

    Raises:
        KeyError: the config has no ``test_dataloader.dataset.pipeline``.
    """
    try:
        steps = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    except AttributeError as err:
        raise KeyError('inference needs test_dataloader.dataset.pipeline in the config (the '
                       'steps from image loading to PackDetInputs)') from err
    transforms = []
    for step in steps:
        if step['type'] in ANNOTATION_TRANSFORMS:
            continue
        if step['type'] == 'LoadImageFromFile' and from_array:
            transforms.append(LoadImageFromArray())
        else:
            transforms.append(TRANSFORMS.build(step))
    return transforms


def run_batch(model: nn.Module, pipeline: Sequence[BaseTransform],
              images: Sequence[ImageInput]) -> list[DetDataSample]:
    """One ``test_step`` over ``images`` (paths or BGR arrays, not mixed)."""
    inputs, samples = [], []
    for index, image in enumerate(images):
        results = (dict(img=image, img_id=index) if isinstance(image, np.ndarray)
                   else dict(img_path=str(image), img_id=index))
        for transform in pipeline:
            results = transform(results)
        inputs.append(results['inputs'])
        samples.append(results['data_samples'])
    with torch.no_grad():
        return model.test_step(dict(inputs=inputs, data_samples=samples))


def inference_detector(model: nn.Module, imgs: ImageInput | Sequence[ImageInput]
                       ) -> DetDataSample | list[DetDataSample]:
    """Predict on one image or a list of images (file paths or ``(H, W, 3)`` BGR arrays).

    Returns:
        A ``DetDataSample`` per image with ``pred_instances`` (``bboxes (K, 4)`` xyxy in the
        original image's pixels, ``scores (K,)``, ``labels (K,)``); a single sample when a
        single image was given.
    """
    if not hasattr(model, 'cfg'):
        raise AttributeError('the model has no .cfg; build it with init_detector')
    single = not isinstance(imgs, (list, tuple))
    images = [imgs] if single else list(imgs)
    pipelines: dict[bool, list[BaseTransform]] = {}
    results = []
    for image in images:
        from_array = isinstance(image, np.ndarray)
        if from_array not in pipelines:
            pipelines[from_array] = build_test_pipeline(model.cfg, from_array)
        results.extend(run_batch(model, pipelines[from_array], [image]))
    return results[0] if single else results
