"""Models, checkpoints and images for the analyses that run a detector (discriminability,
instability, head conflict).

Images go through the config's test pipeline with ``LoadAnnotations`` moved right after
image loading, so the ground-truth boxes are resized with the image: every box here is in
network-input pixels (``img_shape``), as the model sees them. Each image is its own batch,
so padding only comes from the preprocessor's size divisor.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor, nn

from codetr.engine.checkpoint import CheckpointError, load_checkpoint
from codetr.registry import DATASETS, MODELS
from codetr.structures import DetDataSample
from codetr.utils import register_all_modules

# Parameters that inference does not use (the collaborative branch): a checkpoint of another
# K may lack them, or hold others, and still be analysed with the config's model.
AUX_PREFIXES = ('aux_heads.', 'adapter.', 'query_head.pos_query_generators.')


def build_model(cfg: Config, checkpoint: str | None = None) -> nn.Module:
    """``cfg.model`` in eval mode, with ``checkpoint``'s weights when given.

    Weights of the collaborative branch (:data:`AUX_PREFIXES`) may be missing or extra, so a
    K = 0 checkpoint loads into a K = 2 config for the inference-path analyses; any other
    missing weight is an error.
    """
    register_all_modules()
    model = MODELS.build(copy.deepcopy(cfg.model))
    if checkpoint is None:
        model.init_weights()
        return model.eval()
    state = checkpoint_state(checkpoint)
    missing = [k for k in model.state_dict() if k not in state and not k.startswith(AUX_PREFIXES)]
    if missing:
        raise CheckpointError(
            f'{checkpoint} lacks {len(missing)} weights of the model built from the config '
            f'(e.g. {missing[:3]}); give the config the checkpoint was trained with.')
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model.eval()


def checkpoint_state(path: str) -> dict[str, Tensor]:
    """The state dict of a codetr / mmengine checkpoint (``module.`` prefixes removed)."""
    ckpt = load_checkpoint(str(path), map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def checkpoint_meta(path: str) -> dict:
    """A checkpoint's ``meta`` dict (``{}`` if it has none)."""
    meta = load_checkpoint(str(path), map_location='cpu').get('meta')
    return meta if isinstance(meta, dict) else {}


def checkpoint_epoch(path: str, meta: dict | None = None) -> int | None:
    """The epoch a checkpoint was saved at: ``meta['epoch']``, else ``epoch_N`` in its name."""
    meta = checkpoint_meta(path) if meta is None else meta
    if isinstance(meta.get('epoch'), int):
        return meta['epoch']
    match = re.search(r'epoch_(\d+)', Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_config(path: str, meta: dict | None = None) -> Config:
    """The config saved in a checkpoint's ``meta['cfg']`` (mmengine's Runner writes it)."""
    meta = checkpoint_meta(path) if meta is None else meta
    if not meta.get('cfg'):
        raise CheckpointError(f'{path} holds no config (meta["cfg"]); pass --config CONFIG.')
    return Config.fromstring(meta['cfg'], file_format='.py')


def analysis_pipeline(cfg: Config, split: str) -> list[dict]:
    """``<split>_dataloader.dataset.pipeline`` with ``LoadAnnotations`` right after loading."""
    try:
        steps = copy.deepcopy(list(cfg[f'{split}_dataloader'].dataset.pipeline))
    except (KeyError, AttributeError) as err:
        raise KeyError(f'the config has no {split}_dataloader.dataset.pipeline') from err
    annotations = [s for s in steps if s['type'] == 'LoadAnnotations']
    steps = [s for s in steps if s['type'] != 'LoadAnnotations']
    loads = [i for i, s in enumerate(steps) if s['type'].startswith('LoadImage')]
    if not loads:
        raise ValueError(f'the {split} pipeline has no LoadImage* step: {steps}')
    steps.insert(loads[0] + 1, annotations[0] if annotations else
                 dict(type='LoadAnnotations', with_bbox=True))
    return steps


def iter_images(cfg: Config, split: str = 'test',
                max_images: int | None = None) -> Iterator[dict]:
    """The split's images, one at a time, as the pipeline packs them (``inputs``,
    ``data_samples`` with ``gt_instances`` in input pixels), in dataset order."""
    dataset_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
    dataset_cfg['pipeline'] = analysis_pipeline(cfg, split)
    dataset = DATASETS.build(dataset_cfg)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    for index in range(count):
        yield dataset[index]


def preprocess(model: nn.Module, item: dict) -> tuple[Tensor, list[DetDataSample]]:
    """One packed image -> ``(inputs (1, 3, H, W), [sample])`` after the model's preprocessor
    (normalised, padded, ``batch_input_shape`` set)."""
    data = model.data_preprocessor(dict(inputs=[item['inputs']],
                                        data_samples=[item['data_samples']]), False)
    return data['inputs'], data['data_samples']


def valid_size(level: Tensor, sample: DetDataSample) -> tuple[int, int]:
    """``(h, w)`` of the part of a ``(..., h_l, w_l)`` map that covers the image (not the
    padding): the level's size times ``img_shape / batch_input_shape``, rounded up."""
    img_h, img_w = sample.metainfo['img_shape'][:2]
    pad_h, pad_w = sample.metainfo['batch_input_shape'][:2]
    h_l, w_l = level.shape[-2:]
    return (min(h_l, -(-h_l * img_h // pad_h)), min(w_l, -(-w_l * img_w // pad_w)))


def image_rgb(item: dict) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a packed image (the pipeline's BGR ``inputs``), as the
    network sees it before normalisation, cropped to ``img_shape``."""
    height, width = item['data_samples'].metainfo['img_shape'][:2]
    bgr = item['inputs'][:, :height, :width].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(bgr[..., ::-1])


def gt_boxes(sample: DetDataSample) -> Tensor:
    """``(N, 4)`` xyxy ground-truth boxes of a sample, in input pixels."""
    return sample.gt_instances.bboxes.float().reshape(-1, 4)


def query_head_outputs(model: nn.Module, inputs: Tensor,
                       samples: list[DetDataSample]) -> tuple[Tensor, Tensor]:
    """The query head's inference pass: ``(N, B, Q, classes)`` logits and ``(N, B, Q, 4)``
    normalised cxcywh boxes, one entry per decoder layer (the head's ``forward``)."""
    out = model.query_head(model.extract_feat(inputs), samples)
    if isinstance(out, dict):  # CoDeformDETRHead returns a dict
        return out['all_cls_scores'], out['all_bbox_preds']
    cls_scores, bbox_preds = out[0], out[1]
    return cls_scores, bbox_preds


def hungarian_matches(model: nn.Module, cls_scores: Tensor, bbox_preds: Tensor,
                      samples: list[DetDataSample]) -> list[Tensor]:
    """The query matched to each GT box by the head's own Hungarian assigner.

    Args:
        cls_scores: (B, Q, classes) logits of one decoder layer.
        bbox_preds: (B, Q, 4) normalised cxcywh of the same layer.

    Returns:
        Per image a ``(G,)`` long tensor: the query index of each GT box (-1 if unmatched,
        which happens only when there are more GT boxes than queries).
    """
    from mmengine.structures import InstanceData

    assigner = model.query_head.criterion.assigner
    preds = [InstanceData(scores=s.float(), bboxes=b.float())
             for s, b in zip(cls_scores, bbox_preds)]
    gts = [s.gt_instances for s in samples]
    results = assigner.assign_batch(preds, gts, [s.metainfo for s in samples])
    matches = []
    for result, gt in zip(results, gts):
        query_of_gt = torch.full((len(gt),), -1, dtype=torch.long)
        queries = torch.nonzero(result.gt_inds > 0).flatten().cpu()
        query_of_gt[result.gt_inds[queries].cpu() - 1] = queries
        matches.append(query_of_gt)
    return matches
