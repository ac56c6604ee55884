"""CoDINOHead: the one-to-one (DINO) branch of Co-DINO.

Per training step: padding masks and sine positions per level, the deformable encoder,
two-stage proposals (top ``num_queries`` by largest class logit), mixed query selection,
contrastive denoising queries in front of the matching queries, the DINO decoder with box
refinement, and the losses of :class:`DetrCriterion` on every decoder layer, the encoder
proposals and the denoising queries. Parameter names follow the MMDetection port
(``transformer.*``, ``cls_branches.i``, ``reg_branches.i.{0,2,4}``,
``dn_generator.label_embedding``); the port's ``downsample`` (the extra pyramid level) lives in
the detector's multi-scale adapter instead.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS
from codetr.structures import DetDataSample

from ..co_modules import AuxPositives
from ..layers.dn_query import CdnQueryGenerator
from ..layers.transformer import inverse_sigmoid
from ..utils import at_least_float32, to_float32
from .aux_queries import (
    EncodedLevels,
    aux_query_targets,
    build_pos_query_generators,
    get_generator,
)
from .co_dino_transformer import CO_DINO_R50_TRANSFORMER, EncoderOutput
from .detr_criterion import DetrCriterion
from .postprocess import detr_postprocess

# DINO / Co-DINO decoder: inverse_sigmoid clamp when a layer's box is predicted from its
# reference (MMDetection's DINO head and the port use eps=1e-3).
REFERENCE_EPS = 1e-3
# Initial foreground probability of every class logit (focal-loss prior, Lin et al. 2017).
PRIOR_PROB = 0.01
# Official Co-DINO test setting (Co-DETR configs): keep the top 300 (query, class) pairs.
DEFAULT_MAX_PER_IMG = 300


def _reg_mlp(embed_dims: int, num_fcs: int) -> nn.Sequential:
    """``num_fcs x (Linear, ReLU)`` then ``Linear(C, 4)``: indices 0, 2, ..., 2 * num_fcs."""
    layers: list[nn.Module] = []
    for _ in range(num_fcs):
        layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU()]
    layers.append(nn.Linear(embed_dims, 4))
    return nn.Sequential(*layers)


def level_padding_masks(feats: list[Tensor], data_samples: list[DetDataSample]) -> list[Tensor]:
    """Per level (B, h_l, w_l) bool, True where the padded batch holds no image.

    The mask is built at ``batch_input_shape`` from each ``img_shape`` and resized to each
    level with nearest interpolation.
    """
    metas = [s.metainfo for s in data_samples]
    if any('batch_input_shape' not in m or 'img_shape' not in m for m in metas):
        raise KeyError('CoDINOHead needs metainfo batch_input_shape and img_shape in every data '
                       'sample; the DetDataPreprocessor sets batch_input_shape')
    input_h, input_w = metas[0]['batch_input_shape'][:2]
    img_masks = feats[0].new_ones(len(metas), input_h, input_w)
    for i, meta in enumerate(metas):
        img_h, img_w = meta['img_shape'][:2]
        img_masks[i, :img_h, :img_w] = 0
    return [F.interpolate(img_masks[None], size=feat.shape[-2:]).to(torch.bool)[0]
            for feat in feats]


@MODELS.register_module()
class CoDINOHead(BaseModule):
    """DINO query head with two-stage selection and denoising, as Co-DINO's main branch.

    Args:
        num_classes: number of object classes.
        embed_dims: transformer width C.
        num_queries: matching queries (two-stage top-k), 900 officially.
        num_reg_fcs: hidden Linear+ReLU pairs of each box branch.
        transformer: :class:`CoDinoTransformer` config (``encoder``, ``decoder``,
            ``num_feature_levels``); defaults to the official R50 5-level one.
        positional_encoding: sine encoding config; ``2 * num_feats`` must equal embed_dims.
        dn_cfg: :class:`CdnQueryGenerator` noise and group settings.
        loss_cls, loss_bbox, loss_iou: loss configs (QFL beta 2, L1 x5, GIoU x2 officially).
        sync_cls_avg_factor: average the classification normaliser over ranks.
        train_cfg: ``dict(assigner=dict(type='HungarianAssigner', ...))``.
        test_cfg: ``dict(max_per_img=300, score_thr=0., nms=None | dict(type='soft_nms',
            iou_threshold=0.8))``.
        aux_head_names: names of the detector's aux heads (set by :class:`CoDETR`); one
            positive-query generator is built per name, ``pos_query_generators.<name>``.
        pos_query_cfg: extra kwargs of every :class:`PositiveQueryGenerator` (default
            ``mode='dino'``: ``LN(Linear(2C -> C))`` of the box sine embedding).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_classes: int, embed_dims: int = 256, num_queries: int = 900,
                 num_reg_fcs: int = 2, transformer: dict | None = None,
                 positional_encoding: dict | None = None, dn_cfg: dict | None = None,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 loss_iou: dict | None = None, sync_cls_avg_factor: bool = True,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 aux_head_names: tuple[str, ...] = (), pos_query_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.num_queries = num_queries
        self.train_cfg = dict(train_cfg or {})
        self.test_cfg = dict(test_cfg or {})
        self.transformer = self._build_transformer(transformer)
        self.positional_encoding = self._build_positional_encoding(positional_encoding)
        num_pred = len(self.transformer.decoder.layers) + 1  # the last one scores proposals
        cls_branch = nn.Linear(embed_dims, num_classes)
        reg_branch = _reg_mlp(embed_dims, num_reg_fcs)
        self.cls_branches = nn.ModuleList([copy.deepcopy(cls_branch) for _ in range(num_pred)])
        self.reg_branches = nn.ModuleList([copy.deepcopy(reg_branch) for _ in range(num_pred)])
        dn_cfg = {**dict(label_noise_scale=0.5, box_noise_scale=1.0,
                         group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=100)),
                  **(dn_cfg or {})}
        self.dn_generator = CdnQueryGenerator(num_classes, embed_dims, num_queries, **dn_cfg)
        self.criterion = DetrCriterion(
            num_classes,
            loss_cls or dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0,
                             loss_weight=1.0),
            loss_bbox or dict(type='L1Loss', loss_weight=5.0),
            loss_iou or dict(type='GIoULoss', loss_weight=2.0),
            assigner=self.train_cfg.get('assigner', dict(type='HungarianAssigner')),
            sync_cls_avg_factor=sync_cls_avg_factor)
        self.pos_query_generators = build_pos_query_generators(
            aux_head_names, embed_dims, {'mode': 'dino', **(pos_query_cfg or {})})

    def _build_transformer(self, cfg: dict | None) -> nn.Module:
        cfg = copy.deepcopy(cfg if cfg is not None else CO_DINO_R50_TRANSFORMER)
        cfg.setdefault('type', 'CoDinoTransformer')
        cfg['num_queries'] = self.num_queries
        transformer = MODELS.build(cfg)
        if transformer.embed_dims != self.embed_dims:
            raise ValueError(f'transformer width {transformer.embed_dims} != head embed_dims '
                             f'{self.embed_dims}; set both to the same value')
        return transformer

    def _build_positional_encoding(self, cfg: dict | None) -> nn.Module:
        # Co-DINO: temperature 20, normalised, offset 0 (Co-DETR configs)
        cfg = copy.deepcopy(cfg or dict(num_feats=128, temperature=20, normalize=True))
        cfg.setdefault('type', 'SinePositionalEncoding')
        encoding = MODELS.build(cfg)
        if 2 * encoding.num_feats != self.embed_dims:
            raise ValueError(f'positional_encoding.num_feats={encoding.num_feats} must be half '
                             f'of embed_dims={self.embed_dims}')
        return encoding

    def init_weights(self) -> None:
        """Transformer schemes, class bias at prior 0.01, zero last box layers.

        As DINO's two-stage rule: every box branch ends in a zero Linear, so the first boxes
        are exactly the references (proposals).
        """
        super().init_weights()  # children first: the transformer's own scheme
        bias = -torch.log(torch.tensor((1 - PRIOR_PROB) / PRIOR_PROB)).item()
        for branch in self.cls_branches:
            nn.init.constant_(branch.bias, bias)
        for branch in self.reg_branches:
            nn.init.zeros_(branch[-1].weight)
            nn.init.zeros_(branch[-1].bias)

    # ------------------------------------------------------------------ forward
    def encode(self, feats: list[Tensor], data_samples: list[DetDataSample]) -> EncoderOutput:
        """Masks, positions and the encoder over L levels (B, C, h_l, w_l)."""
        masks = level_padding_masks(feats, data_samples)
        pos_embeds = [self.positional_encoding(mask) for mask in masks]
        return self.transformer.encode(feats, masks, pos_embeds)

    def predict_layers(self, hidden_states: Tensor, references: Tensor) -> tuple[Tensor, Tensor]:
        """Per-layer predictions from the decoder outputs.

        Args:
            hidden_states: (N, B, Q, C).
            references: (N + 1, B, Q, 4) boxes in [0, 1]; layer l refines ``references[l]``.

        Returns:
            cls_scores (N, B, Q, num_classes) logits and bbox_preds (N, B, Q, 4) normalised
            ``cxcywh``.
        """
        cls_scores, bbox_preds = [], []
        for layer, hidden in enumerate(hidden_states):
            cls_scores.append(self.cls_branches[layer](hidden))
            deltas = self.reg_branches[layer](hidden)
            bbox_preds.append((deltas + inverse_sigmoid(references[layer], REFERENCE_EPS))
                              .sigmoid())
        return torch.stack(cls_scores), torch.stack(bbox_preds)

    def forward(self, feats: list[Tensor],
                data_samples: list[DetDataSample]) -> tuple[Tensor, Tensor]:
        """Inference pass (no denoising queries).

        Returns:
            cls_scores (N, B, Q, num_classes) logits and bbox_preds (N, B, Q, 4) normalised
            ``cxcywh``, one entry per decoder layer.
        """
        return self._decode(self.encode(feats, data_samples))

    def _decode(self, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Query selection and the decoder over an encoder output (see :meth:`forward`)."""
        selected = self.transformer.select_queries(enc, self.cls_branches[-1],
                                                   self.reg_branches[-1])
        hidden, refs = self.transformer.decode(selected.query, selected.reference_points, enc,
                                               self.reg_branches)
        return self.predict_layers(hidden, refs)

    # ------------------------------------------------------------------- losses
    def loss(self, feats: list[Tensor],
             data_samples: list[DetDataSample]) -> tuple[dict[str, Tensor], list[Tensor]]:
        """One-to-one losses of a batch.

        Args:
            feats: L levels (B, C, h_l, w_l) from the neck.
            data_samples: with ``gt_instances`` (pixel xyxy of the network input) and metainfo
                ``img_shape``, ``batch_input_shape``.

        Returns:
            losses: ``loss_{cls,bbox,iou}`` (last layer), ``d{i}.loss_*`` (earlier layers),
                ``enc_loss_*`` (encoder proposals), ``dn_loss_*`` and ``d{i}.dn_loss_*``.
            memory: the encoder output as L maps (B, C, h_l, w_l), an ``EncodedLevels``
                that lets :meth:`loss_aux` reuse the flattened memory and its projections.
        """
        dn_label_query, dn_bbox_query, attn_mask, dn_meta = self.dn_generator(data_samples)
        enc = self.encode(feats, data_samples)
        selected = self.transformer.select_queries(enc, self.cls_branches[-1],
                                                   self.reg_branches[-1])
        query = torch.cat([dn_label_query, selected.query], dim=1)
        if dn_label_query.size(1) == 0:
            # No GT in the batch: keep label_embedding in the graph so DDP finds its gradient.
            query = query + self.dn_generator.label_embedding.weight[0, 0] * 0.0
        reference = torch.cat([dn_bbox_query.sigmoid(), selected.reference_points], dim=1)
        hidden, refs = self.transformer.decode(query, reference, enc, self.reg_branches,
                                               self_attn_mask=attn_mask)
        # float32 from here on (autocast): targets, matching and losses in full precision
        cls_scores, bbox_preds = to_float32(self.predict_layers(hidden, refs))

        num_dn = dn_meta['num_denoising_queries']
        gts = [s.gt_instances for s in data_samples]
        metas = [s.metainfo for s in data_samples]
        crit = self.criterion
        losses = crit.loss_layers(cls_scores[:, :, num_dn:], bbox_preds[:, :, num_dn:], metas,
                                  gt_instances_list=gts)
        losses.update(crit.loss_layers(selected.enc_scores[None], selected.enc_boxes[None],
                                       metas, gt_instances_list=gts, prefix='enc_'))
        dn_targets = crit.dn_targets(gts, metas, dn_meta, bbox_preds)
        losses.update(crit.loss_layers(cls_scores[:, :, :num_dn], bbox_preds[:, :, :num_dn],
                                       metas, targets=dn_targets, prefix='dn_'))
        return losses, EncodedLevels(enc.split_levels(), enc)

    @property
    def num_decoder_layers(self) -> int:
        """Decoder layers N; the detector folds it into the aux heads' loss weight."""
        return len(self.transformer.decoder.layers)

    def loss_aux(self, memory: list[Tensor], positives: AuxPositives,
                 data_samples: list[DetDataSample], head_name: str) -> dict[str, Tensor]:
        """Losses of one aux head's positive queries: one decoder pass, fixed targets.

        The queries come from ``pos_query_generators[head_name]``, their initial boxes are the
        positive boxes; they attend to the L encoder levels only, without denoising or
        matching queries and without an attention mask (official Co-DINO). Given the
        ``EncodedLevels`` that :meth:`loss` returned, the pass reuses its flattened memory
        and the decoder's value projections; given plain maps, it flattens them afresh.

        Args:
            memory: L maps (B, C, h_l, w_l), the encoder output :meth:`loss` returned.
            positives: the aux head's positives (pixel xyxy of the network input).
            data_samples: with metainfo ``img_shape`` and ``batch_input_shape``.
            head_name: the aux head's name in ``model.aux_heads``.

        Returns:
            ``loss_{cls,bbox,iou}`` (last layer) and ``d{i}.loss_*`` (earlier layers), raw
            (the detector applies lambda_1 and the ``{name}.pos.`` prefix).
        """
        generator = get_generator(self.pos_query_generators, head_name)
        metas = [s.metainfo for s in data_samples]
        boxes, targets = aux_query_targets(positives, metas, self.num_classes)
        query, _ = generator(boxes, positives.feats)
        enc = (memory.shared if isinstance(memory, EncodedLevels) else
               EncoderOutput.from_levels(memory, level_padding_masks(memory, data_samples)))
        # the reference boxes stay float32 when the queries are autocast's bfloat16
        boxes = boxes.to(query.device, at_least_float32(query.dtype))
        hidden, refs = self.transformer.decode(query, boxes, enc, self.reg_branches)
        cls_scores, bbox_preds = to_float32(self.predict_layers(hidden, refs))
        return self.criterion.loss_layers(cls_scores, bbox_preds, metas, targets=targets)

    def encode_memory(self, feats: list[Tensor],
                      data_samples: list[DetDataSample]) -> list[Tensor]:
        """The encoder output as L maps (B, C, h_l, w_l), without decoding (aux evaluation)."""
        return self.encode(feats, data_samples).split_levels()

    # ---------------------------------------------------------------- inference
    def predict(self, feats: list[Tensor], data_samples: list[DetDataSample],
                rescale: bool = True) -> list[InstanceData]:
        """Detections per image from the last decoder layer.

        Returns:
            One ``InstanceData`` per image: ``bboxes (K, 4)`` xyxy pixels (original image when
            ``rescale``, else network input), ``scores (K,)``, ``labels (K,)``,
            ``K <= test_cfg.max_per_img``.
        """
        cls_scores, bbox_preds = to_float32(self.forward(feats, data_samples))
        return self._postprocess(cls_scores, bbox_preds, data_samples, rescale)

    def predict_with_memory(self, feats: list[Tensor], data_samples: list[DetDataSample],
                            rescale: bool = True) -> tuple[list[InstanceData], list[Tensor]]:
        """:meth:`predict`'s detections and the encoder output as L maps (B, C, h_l, w_l),
        from one pass (the detector predicts masks for these boxes on that memory)."""
        enc = self.encode(feats, data_samples)
        cls_scores, bbox_preds = to_float32(self._decode(enc))
        return (self._postprocess(cls_scores, bbox_preds, data_samples, rescale),
                enc.split_levels())

    def _postprocess(self, cls_scores: Tensor, bbox_preds: Tensor,
                     data_samples: list[DetDataSample], rescale: bool) -> list[InstanceData]:
        """Per-image detections of the last layer of ``(N, B, Q, ...)`` predictions."""
        cfg: dict[str, Any] = self.test_cfg
        return [detr_postprocess(cls_scores[-1, i], bbox_preds[-1, i], sample.metainfo,
                                 max_per_img=cfg.get('max_per_img', DEFAULT_MAX_PER_IMG),
                                 score_thr=cfg.get('score_thr', 0.0), nms=cfg.get('nms'),
                                 rescale=rescale)
                for i, sample in enumerate(data_samples)]
