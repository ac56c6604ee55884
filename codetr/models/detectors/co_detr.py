"""CoDETR: backbone + neck + one-to-one query head (+ named auxiliary heads, a later step).

The detector is wiring only: every computation lives in the modules it composes. See
DESIGN.md section 3 for the data flow and section 4 for the head contracts.
"""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

from codetr.registry import MODELS
from codetr.structures import DetDataSample

# Which branch predicts at test time: the one-to-one query head ('detr') or, later, an
# auxiliary head ('one-stage' = ATSS-like, 'two-stage' = Faster R-CNN-like), as in the
# official configs' `test_cfg.eval_module`.
EVAL_MODULES = ('detr', 'one-stage', 'two-stage')


@MODELS.register_module()
class CoDETR(BaseModel):
    """Co-DETR detector (Zong et al., arXiv 2211.12860).

    Args:
        backbone: config of the backbone, e.g. ``ResNet``; returns a tuple of (B, C_i, H_i, W_i).
        neck: config of the neck (``ChannelMapper``) or ``None`` to feed the backbone's levels.
        query_head: config of the one-to-one head (``CoDINOHead``, ``CoDeformDETRHead``).
        adapter: config of the multi-scale adapter that turns the encoder memory into the
            aux heads' pyramid. Only built when ``aux_heads`` is non-empty: with K = 0 it would
            hold parameters that never receive a gradient (which DDP rejects).
        aux_heads: ``dict(name=cfg, ...)`` of auxiliary heads; ``None`` or ``{}`` is K = 0,
            the plain DETR baseline. (K > 0 is not implemented yet.)
        lambda_1: weight of the positive-query branches (paper eq. 6).
        lambda_2: weight of the auxiliary heads' losses (paper eq. 6).
        train_cfg: per-branch training settings: ``dict(query_head=dict(assigner=...), <aux
            name>=...)``; ``train_cfg['query_head']`` becomes the head's ``train_cfg``.
        test_cfg: ``dict(eval_module='detr', query_head=dict(max_per_img=..., nms=...))``.
        data_preprocessor: config of ``DetDataPreprocessor``.
        init_cfg: mmengine init config.
    """

    def __init__(self, backbone: dict, neck: dict | None, query_head: dict,
                 adapter: dict | None = None, aux_heads: dict | None = None,
                 lambda_1: float = 1.0, lambda_2: float = 2.0, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.train_cfg = dict(train_cfg or {})
        self.test_cfg = dict(test_cfg or {})
        self.eval_module = self.test_cfg.get('eval_module', 'detr')
        if self.eval_module not in EVAL_MODULES:
            raise ValueError(f'test_cfg.eval_module={self.eval_module!r} must be one of '
                             f'{EVAL_MODULES}.')
        if self.eval_module != 'detr':
            raise NotImplementedError(
                f"test_cfg.eval_module={self.eval_module!r} evaluates through an auxiliary "
                f"head, which codetr does not support yet; use eval_module='detr'.")
        if aux_heads:
            raise NotImplementedError(
                f'aux_heads {sorted(aux_heads)} are not supported yet (K > 0); set '
                f'model.aux_heads=dict() to train the one-to-one branch alone.')
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.query_head = MODELS.build(self._branch_cfg('query_head', query_head))
        self.aux_heads = nn.ModuleDict()  # filled by name once aux heads exist
        self.adapter = MODELS.build(adapter) if adapter is not None and aux_heads else None

    def _branch_cfg(self, name: str, cfg: dict) -> dict:
        """``cfg`` with the detector-level ``train_cfg[name]`` / ``test_cfg[name]`` put in."""
        cfg = copy.deepcopy(cfg)
        for key, branch_cfgs in (('train_cfg', self.train_cfg), ('test_cfg', self.test_cfg)):
            if name not in branch_cfgs:
                continue
            if cfg.get(key) is not None and cfg[key] != branch_cfgs[name]:
                raise ValueError(f'model.{name}.{key} and model.{key}.{name} are both set and '
                                 f'differ; keep only model.{key}.{name}.')
            cfg[key] = copy.deepcopy(branch_cfgs[name])
        return cfg

    def extract_feat(self, inputs: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised images -> L levels of (B, C, H_l, W_l)."""
        feats = self.backbone(inputs)
        if self.neck is not None:
            feats = self.neck(feats)
        return list(feats)

    def loss(self, inputs: Tensor, data_samples: list[DetDataSample]) -> dict[str, Tensor]:
        """Losses of every branch; mmengine sums each entry whose key contains ``loss``."""
        self._check_labels(data_samples)
        feats = self.extract_feat(inputs)
        # The memory (encoder output per level) feeds the aux branches, which come later.
        losses, _memory = self.query_head.loss(feats, data_samples)
        return losses

    def predict(self, inputs: Tensor, data_samples: list[DetDataSample],
                rescale: bool = True) -> list[DetDataSample]:
        """Adds ``pred_instances`` (bboxes (N, 4) xyxy, scores (N,), labels (N,)) to each
        sample; boxes are in original image pixels when ``rescale``, else network input pixels."""
        feats = self.extract_feat(inputs)
        results = self.query_head.predict(feats, data_samples, rescale=rescale)
        for sample, result in zip(data_samples, results):
            sample.pred_instances = result
        return data_samples

    def _forward(self, inputs: Tensor, data_samples: list[DetDataSample] | None = None):
        """The query head's raw outputs (its ``forward``), without losses or post-processing."""
        return self.query_head(self.extract_feat(inputs), data_samples)

    def forward(self, inputs: Tensor, data_samples: list[DetDataSample] | None = None,
                mode: str = 'tensor'):
        """mmengine's entry point: ``mode`` is ``'loss'``, ``'predict'`` or ``'tensor'``."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise ValueError(f"mode={mode!r} must be 'loss', 'predict' or 'tensor'.")

    def _check_labels(self, data_samples: list[DetDataSample]) -> None:
        """Catch a dataset with more classes than the head before it trains on garbage."""
        labels = [s.gt_instances.labels for s in data_samples if len(s.gt_instances) > 0]
        if not labels:
            return
        num_classes = self.query_head.num_classes
        # One scalar sync per batch; the Hungarian matching moves data to the CPU anyway.
        largest = int(torch.cat(labels).max())
        if largest >= num_classes:
            raise ValueError(f'label {largest} >= num_classes {num_classes}: set '
                             f'model.query_head.num_classes to the number of classes in your '
                             f'dataset.')
