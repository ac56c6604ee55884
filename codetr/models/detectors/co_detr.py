"""CoDETR: backbone + neck + one-to-one query head + named auxiliary heads.

The detector is wiring only: every computation lives in the modules it composes. See
DESIGN.md section 3 for the data flow and section 4 for the head contracts.

Total loss (paper eq. 6, with N decoder layers, K aux heads):
``sum(main) + lambda_2 * N * sum_i(raw aux losses of head i) + lambda_1 * sum_i(positive-query
losses of head i over all layers)``. The official configs fold ``lambda_2 * N = 12`` into the
aux heads' loss weights; here the aux heads carry the unfolded weights and the detector
applies both lambdas, so changing N or lambda_2 needs no edit of the heads.
"""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModel, ModuleDict
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS
from codetr.structures import DetDataSample

from .. import co_modules  # noqa: F401  (registers the adapters for model.adapter)
from .num_classes import fill_num_classes

# Which branch predicts at test time: the one-to-one query head ('detr') or an auxiliary
# head ('one-stage' = ATSS-like, 'two-stage' = Faster R-CNN-like), as in the official
# configs' `test_cfg.eval_module`. Aux heads declare their kind in a class attribute
# `eval_kind`.
EVAL_MODULES = ('detr', 'one-stage', 'two-stage')
# Keys of train_cfg / test_cfg that are not branch names, so no aux head may take them.
RESERVED_NAMES = ('query_head', 'eval_module', 'eval_head', 'mask_branch')


@MODELS.register_module()
class CoDETR(BaseModel):
    """Co-DETR detector (Zong et al., arXiv 2211.12860).

    Args:
        backbone: config of the backbone, e.g. ``ResNet``; returns a tuple of (B, C_i, H_i, W_i).
        neck: config of the neck (``ChannelMapper``) or ``None`` to feed the backbone's levels.
        query_head: config of the one-to-one head (``CoDINOHead``, ``CoDeformDETRHead``,
            ``CoConditionalDETRHead``, ``CoDABDETRHead``).
        adapter: config of the adapter (``MultiScaleAdapter``; ``SingleScaleAdapter`` for the
            one-map encoders of the C5 heads) that turns the
            encoder memory into the aux heads' pyramid; required when ``aux_heads`` is
            non-empty (``in_channels`` defaults to the query head's width) and not built with
            K = 0, where it would hold parameters without gradient (which DDP rejects).
        aux_heads: ``dict(name=cfg, ...)`` of auxiliary heads, built in this order; ``None`` or
            ``{}`` is K = 0, the plain DETR baseline. Names prefix the loss keys
            (``{name}.loss_cls``, ``{name}.pos.loss_cls``).
        lambda_1: weight of the positive-query branches (paper eq. 6).
        lambda_2: weight of the auxiliary heads' losses (paper eq. 6); it multiplies the
            heads' raw losses together with the number of decoder layers.
        train_cfg: per-branch training settings: ``dict(query_head=dict(assigner=...), <aux
            name>=...)``; ``train_cfg[branch]`` becomes that branch's ``train_cfg``.
        test_cfg: ``dict(eval_module='detr' | 'one-stage' | 'two-stage', eval_head=None | NAME,
            mask_branch=None | NAME, query_head=dict(max_per_img=..., nms=...), <aux
            name>=...)``. With an aux ``eval_module``, ``eval_head`` names the head; by default
            the first aux head whose ``eval_kind`` is ``eval_module``. ``mask_branch`` names
            an aux head with a mask branch (``CoMaskRCNNHead``) that predicts masks for the
            evaluated branch's boxes in the same pass (the DETR's boxes with the default
            ``eval_module='detr'``); an eval head with its own mask branch predicts its masks
            itself.
        data_preprocessor: config of ``DetDataPreprocessor``.
        init_cfg: mmengine init config.
        num_classes: the dataset's number of classes, given to every head (query head and
            aux heads, nested RoI heads included) whose config does not set it; a head's own
            value that differs raises. None takes the query head's ``num_classes``.
    """

    def __init__(self, backbone: dict, neck: dict | None, query_head: dict,
                 adapter: dict | None = None, aux_heads: dict | None = None,
                 lambda_1: float = 1.0, lambda_2: float = 2.0, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None, num_classes: int | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.train_cfg = dict(train_cfg or {})
        self.test_cfg = dict(test_cfg or {})
        self.eval_module = self.test_cfg.get('eval_module', 'detr')
        if self.eval_module not in EVAL_MODULES:
            raise ValueError(f'test_cfg.eval_module={self.eval_module!r} must be one of '
                             f'{EVAL_MODULES}.')
        aux_heads = dict(aux_heads or {})
        self._check_aux_names(aux_heads)
        query_head, aux_heads, self.num_classes = fill_num_classes(num_classes, query_head,
                                                                   aux_heads)
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        head_cfg = self._branch_cfg('query_head', query_head)
        if head_cfg.get('aux_head_names', tuple(aux_heads)) != tuple(aux_heads):
            raise ValueError('model.query_head.aux_head_names is set by CoDETR from '
                             'model.aux_heads; remove it from the query head config')
        head_cfg['aux_head_names'] = tuple(aux_heads)
        self.query_head = MODELS.build(head_cfg)
        self.adapter = self._build_adapter(adapter) if aux_heads else None
        # mmengine's ModuleDict: model.init_weights() reaches the heads' own init_cfg (FCOS)
        self.aux_heads = ModuleDict(
            {name: MODELS.build(self._branch_cfg(name, cfg)) for name, cfg in aux_heads.items()})
        self.eval_head = self._select_eval_head()
        self.mask_branch = self._select_mask_branch()

    @staticmethod
    def _check_aux_names(aux_heads: dict) -> None:
        for name in aux_heads:
            if name in RESERVED_NAMES or '.' in name or not name:
                raise ValueError(f'aux head name {name!r} is not allowed: use a non-empty name '
                                 f'without dots, other than {RESERVED_NAMES}')

    def _build_adapter(self, adapter: dict | None) -> nn.Module:
        if adapter is None:
            raise ValueError("model.aux_heads needs model.adapter, e.g. "
                             "adapter=dict(type='MultiScaleAdapter', num_extra=1), or "
                             "adapter=dict(type='SingleScaleAdapter') for a single-scale head")
        cfg = copy.deepcopy(adapter)
        cfg.setdefault('in_channels', self.query_head.embed_dims)
        return MODELS.build(cfg)

    def _select_eval_head(self) -> str | None:
        """Name of the aux head that predicts when ``eval_module`` is not ``'detr'``."""
        if self.eval_module == 'detr':
            return None
        kinds = {name: getattr(type(head), 'eval_kind', None)
                 for name, head in self.aux_heads.items()}
        name = self.test_cfg.get('eval_head')
        if name is None:
            name = next((n for n, kind in kinds.items() if kind == self.eval_module), None)
        if name is None or name not in kinds or kinds[name] != self.eval_module:
            raise ValueError(
                f'test_cfg.eval_module={self.eval_module!r} (eval_head='
                f'{self.test_cfg.get("eval_head")!r}) needs an aux head of that kind, but '
                f'model.aux_heads has {kinds or "none"}; add such a head, name it in '
                "test_cfg.eval_head, or use eval_module='detr'")
        return name

    def _select_mask_branch(self) -> str | None:
        """Name of the aux head whose mask branch predicts masks for the evaluated boxes."""
        name = self.test_cfg.get('mask_branch')
        if name is None:
            return None
        with_masks = [n for n, head in self.aux_heads.items() if hasattr(head, 'predict_masks')]
        if name not in with_masks:
            raise ValueError(f'test_cfg.mask_branch={name!r} must name an aux head with a mask '
                             f'branch; model.aux_heads has {with_masks or "none"} with one')
        return name

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
        losses, memory = self.query_head.loss(feats, data_samples)
        if not self.aux_heads:
            return losses
        pyramid = self.adapter(memory)
        # Paper eq. 6 puts lambda_2 inside the sum over the N decoder layers: lambda_2 * N.
        aux_weight = self.lambda_2 * self.query_head.num_decoder_layers
        for name, head in self.aux_heads.items():
            head_losses, positives = head.loss(pyramid, data_samples)
            losses.update(_scaled(head_losses, f'{name}.', aux_weight))
            pos_losses = self.query_head.loss_aux(memory, positives, data_samples, name)
            losses.update(_scaled(pos_losses, f'{name}.pos.', self.lambda_1))
        return losses

    def predict(self, inputs: Tensor, data_samples: list[DetDataSample],
                rescale: bool = True) -> list[DetDataSample]:
        """Adds ``pred_instances`` (bboxes (N, 4) xyxy, scores (N,), labels (N,), and with a
        mask branch ``masks (N, H, W)`` bool) to each sample; boxes and masks are in original
        image pixels when ``rescale``, else network input pixels."""
        feats = self.extract_feat(inputs)
        if self.eval_head is not None:
            results = self._predict_aux(feats, data_samples, rescale)
        elif self.mask_branch is not None:
            results, memory = self.query_head.predict_with_memory(feats, data_samples,
                                                                  rescale=False)
            results = self.aux_heads[self.mask_branch].predict_masks(
                self.adapter(memory), results, data_samples, rescale=rescale)
        else:
            results = self.query_head.predict(feats, data_samples, rescale=rescale)
        for sample, result in zip(data_samples, results):
            sample.pred_instances = result
        return data_samples

    def _predict_aux(self, feats: list[Tensor], data_samples: list[DetDataSample],
                     rescale: bool) -> list[InstanceData]:
        """Detections of ``aux_heads[eval_head]``: encoder, adapter, aux head; no decoder."""
        memory = self.query_head.encode_memory(feats, data_samples)
        pyramid = self.adapter(memory)
        head = self.aux_heads[self.eval_head]
        if self.mask_branch in (None, self.eval_head):
            return head.predict(pyramid, data_samples, rescale=rescale)
        results = head.predict(pyramid, data_samples, rescale=False)
        return self.aux_heads[self.mask_branch].predict_masks(pyramid, results, data_samples,
                                                              rescale=rescale)

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
        """Catch a dataset with more classes than the heads, or a NaN / infinite box, before
        it reaches a loss."""
        present = [s.gt_instances for s in data_samples if len(s.gt_instances) > 0]
        if not present:
            return
        # One sync per batch; the Hungarian matching moves data to the CPU anyway.
        largest, nonfinite = torch.stack([
            torch.cat([g.labels for g in present]).max(),
            (~torch.isfinite(torch.cat([g.bboxes for g in present]))).sum()]).tolist()
        if nonfinite:
            bad = [s.metainfo.get('img_path', s.metainfo.get('img_id')) for s in data_samples
                   if len(s.gt_instances) and not torch.isfinite(s.gt_instances.bboxes).all()]
            raise ValueError(f'ground-truth boxes with NaN or infinite coordinates reached '
                             f'the model (images {bad}); a transform of the pipeline made them '
                             f'or the dataset let them through (LoadAnnotations drops them).')
        if largest >= self.num_classes:
            raise ValueError(f'label {largest} >= num_classes {self.num_classes}: set '
                             f'model.num_classes to the number of classes in your dataset.')


def _scaled(losses: dict, prefix: str, weight: float) -> dict:
    """``{prefix + key: value * weight}``; values are tensors or lists of tensors."""
    return {f'{prefix}{key}': [v * weight for v in value] if isinstance(value, (list, tuple))
            else value * weight for key, value in losses.items()}
