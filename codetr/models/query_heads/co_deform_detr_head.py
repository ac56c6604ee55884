"""CoDeformDETRHead: the one-to-one (Deformable-DETR++) branch of Co-Deformable-DETR.

Two-stage proposals ranked by the encoder, mixed query selection (learned content queries,
positional queries from the proposals), iterative box refinement with look-forward-twice,
Hungarian matching and focal / L1 / GIoU losses on every decoder layer and on the encoder
proposals; no denoising queries and no NMS at test time.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS

from ..co_modules import AuxPositives
from ..layers import inverse_sigmoid
from ..utils import at_least_float32, to_float32
from .aux_queries import (
    EncodedLevels,
    aux_query_targets,
    build_pos_query_generators,
    get_generator,
)
from .co_deform_detr_transformer import FlatPyramid
from .co_dino_head import level_padding_masks
from .detr_criterion import DetrCriterion
from .postprocess import detr_postprocess

# Official Co-Deformable-DETR R50 query head (projects/configs/co_deformable_detr/).
DEFAULT_LOSS_CLS = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                        loss_weight=2.0)
DEFAULT_LOSS_BBOX = dict(type='L1Loss', loss_weight=5.0)
DEFAULT_LOSS_IOU = dict(type='GIoULoss', loss_weight=2.0)
DEFAULT_POSITIONAL_ENCODING = dict(num_feats=128, normalize=True, offset=-0.5)
_R50_ATTN = dict(embed_dims=256, num_heads=8, num_levels=4, num_points=4, dropout=0.0)
_R50_FFN = dict(embed_dims=256, feedforward_channels=2048, ffn_drop=0.0)
CO_DEFORMABLE_DETR_R50_TRANSFORMER = dict(
    type='CoDeformableDetrTransformer', num_feature_levels=4,
    encoder=dict(type='DeformableDetrTransformerEncoder', num_layers=6,
                 layer_cfg=dict(self_attn_cfg=_R50_ATTN, ffn_cfg=_R50_FFN)),
    decoder=dict(type='DeformableDetrTransformerDecoder', num_layers=6,
                 look_forward_twice=True,
                 layer_cfg=dict(self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0),
                                cross_attn_cfg=_R50_ATTN, ffn_cfg=_R50_FFN)))
# Official Co-Deformable-DETR positive queries: content + positional halves, plus the anchor
# / RoI feature (``with_coord_feat=True``) and the R50 release's scalar head embedding.
DEFAULT_POS_QUERY_CFG = dict(mode='deformable', with_coord_feat=True, head_pos_dims=1)
# Initial foreground probability of the classifiers (DETR-family focal-loss heads).
PRIOR_PROB = 0.01
# The entries of forward()'s output that are predictions (cast to float32 for losses and
# post-processing under autocast); ``memory`` stays in the network's dtype for the aux heads.
PREDICTION_KEYS = ('all_cls_scores', 'all_bbox_preds', 'enc_cls_scores', 'enc_bbox_preds')


def _reg_branch(embed_dims: int, num_fcs: int) -> nn.Sequential:
    """``num_fcs`` x (Linear + ReLU), then Linear to 4 box logits (names ``.0 .2 .4``)."""
    layers: list[nn.Module] = []
    for _ in range(num_fcs):
        layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(embed_dims, 4))


@MODELS.register_module()
class CoDeformDETRHead(BaseModule):
    """Query head of Co-Deformable-DETR (as_two_stage, with_box_refine, mixed_selection).

    Args:
        num_classes: number of object classes.
        transformer: ``CoDeformableDetrTransformer`` config; defaults to the official R50
            one (:data:`CO_DEFORMABLE_DETR_R50_TRANSFORMER`).
        num_queries: decoder queries, also the number of two-stage proposals (300).
        positional_encoding: ``SinePositionalEncoding`` kwargs (official: normalised,
            offset -0.5, 128 features per axis).
        loss_cls, loss_bbox, loss_iou: loss configs (official: focal 2, L1 5, GIoU 2).
        num_reg_fcs: hidden layers of each regression branch (2).
        sync_cls_avg_factor: average the classification normaliser over ranks.
        train_cfg: ``dict(assigner=...)``; default ``HungarianAssigner`` with focal 2, L1 5,
            GIoU 2 costs.
        test_cfg: ``dict(max_per_img=100, score_thr=0.0, nms=None)``; with ``nms`` (a
            :func:`batched_nms` config) the top ``num_queries`` go through NMS first.
        aux_head_names: names of the detector's aux heads (set by :class:`CoDETR`); one
            positive-query generator is built per name, ``pos_query_generators.<name>``.
        pos_query_cfg: :class:`PositiveQueryGenerator` kwargs overriding
            :data:`DEFAULT_POS_QUERY_CFG`.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_classes: int, transformer: dict | None = None,
                 num_queries: int = 300,
                 positional_encoding: dict | None = None, loss_cls: dict | None = None,
                 loss_bbox: dict | None = None, loss_iou: dict | None = None,
                 num_reg_fcs: int = 2, sync_cls_avg_factor: bool = True,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 aux_head_names: tuple[str, ...] = (), pos_query_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.test_cfg = {'max_per_img': 100, 'score_thr': 0.0, 'nms': None, **(test_cfg or {})}
        self.transformer = MODELS.build(
            copy.deepcopy(transformer or CO_DEFORMABLE_DETR_R50_TRANSFORMER))
        self.embed_dims = self.transformer.embed_dims
        pe_cfg = copy.deepcopy(positional_encoding or DEFAULT_POSITIONAL_ENCODING)
        pe_cfg.setdefault('type', 'SinePositionalEncoding')
        self.positional_encoding = MODELS.build(pe_cfg)
        if 2 * self.positional_encoding.num_feats != self.embed_dims:
            raise ValueError(f'positional_encoding.num_feats must be embed_dims / 2 = '
                             f'{self.embed_dims // 2}, got {self.positional_encoding.num_feats}')
        # One branch per decoder layer plus one scoring the encoder proposals (the last).
        num_pred = self.transformer.num_layers + 1
        self.cls_branches = nn.ModuleList(
            nn.Linear(self.embed_dims, num_classes) for _ in range(num_pred))
        self.reg_branches = nn.ModuleList(
            _reg_branch(self.embed_dims, num_reg_fcs) for _ in range(num_pred))
        # Mixed query selection: learned content queries.
        self.query_embedding = nn.Embedding(num_queries, self.embed_dims)
        train_cfg = train_cfg or {}
        self.criterion = DetrCriterion(
            num_classes, copy.deepcopy(loss_cls or DEFAULT_LOSS_CLS),
            copy.deepcopy(loss_bbox or DEFAULT_LOSS_BBOX),
            copy.deepcopy(loss_iou or DEFAULT_LOSS_IOU),
            assigner=train_cfg.get('assigner', dict(type='HungarianAssigner')),
            sync_cls_avg_factor=sync_cls_avg_factor)
        self.pos_query_generators = build_pos_query_generators(
            aux_head_names, self.embed_dims, {**DEFAULT_POS_QUERY_CFG, **(pos_query_cfg or {})})

    def init_weights(self) -> None:
        """Transformer init; classifier bias at prior 0.01; regressors start at zero offset."""
        self.transformer.init_weights()
        for generator in self.pos_query_generators.values():
            generator.init_weights()
        bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for branch in self.cls_branches:
            nn.init.constant_(branch.bias, bias)
        for branch in self.reg_branches:
            nn.init.zeros_(branch[-1].weight)
            nn.init.zeros_(branch[-1].bias)

    # ------------------------------------------------------------------ forward
    def forward(self, feats: list[Tensor], data_samples: list[Any]) -> dict[str, Any]:
        """Run encoder, proposal selection and decoder.

        Args:
            feats: L levels (B, C, h_l, w_l) from the neck.
            data_samples: B samples whose metainfo holds ``img_shape`` and
                ``batch_input_shape``.

        Returns:
            dict with ``all_cls_scores (N, B, Q, num_classes)`` logits, ``all_bbox_preds
            (N, B, Q, 4)`` normalised ``cxcywh``, ``enc_cls_scores (B, S, num_classes)``,
            ``enc_bbox_preds (B, S, 4)`` and ``memory``: L levels (B, C, h_l, w_l) of the
            encoder output.
        """
        flat = self._flatten(feats, data_samples)
        memory = self.transformer.encode(flat)
        num_layers = self.transformer.num_layers
        enc_cls, enc_coords, reference, query_pos = self.transformer.select_proposals(
            memory, flat, self.cls_branches[num_layers], self.reg_branches[num_layers],
            self.num_queries)
        query = self.query_embedding.weight[None].expand(memory.size(0), -1, -1)
        value_cache: dict = {}
        hidden_states, references = self.transformer.decode(
            query, query_pos, memory, flat, reference, self.reg_branches, value_cache)
        all_cls_scores, all_bbox_preds = self.predict_layers(hidden_states, references)
        # The positive-query passes decode against this same memory: see EncodedLevels.
        shared = (memory, flat, value_cache)
        return dict(all_cls_scores=all_cls_scores, all_bbox_preds=all_bbox_preds,
                    enc_cls_scores=enc_cls, enc_bbox_preds=enc_coords.sigmoid(),
                    memory=EncodedLevels(self._split_levels(memory, feats), shared))

    def _flatten(self, feats: list[Tensor], data_samples: list[Any]) -> FlatPyramid:
        """Padding masks, sine positions and the flattened pyramid of L levels."""
        masks = level_padding_masks(feats, data_samples)
        pos = [self.positional_encoding(mask).to(feat) for mask, feat in zip(masks, feats)]
        return self.transformer.flatten(feats, masks, pos)

    def predict_layers(self, hidden_states: Tensor,
                       references: Tensor) -> tuple[Tensor, Tensor]:
        """(N, B, Q, C) decoder states and (N + 1, B, Q, 4) references -> (N, B, Q,
        num_classes) logits and (N, B, Q, 4) normalised ``cxcywh``; layer l refines
        ``references[l]``."""
        all_cls, all_boxes = [], []
        for layer, hidden in enumerate(hidden_states):
            all_cls.append(self.cls_branches[layer](hidden))
            deltas = self.reg_branches[layer](hidden)
            all_boxes.append((deltas + inverse_sigmoid(references[layer])).sigmoid())
        return torch.stack(all_cls), torch.stack(all_boxes)

    @staticmethod
    def _split_levels(memory: Tensor, feats: list[Tensor]) -> list[Tensor]:
        """(B, S, C) memory -> L maps (B, C, h_l, w_l) shaped like ``feats``."""
        sizes = [f.shape[-2] * f.shape[-1] for f in feats]
        chunks = memory.split(sizes, dim=1)
        return [c.transpose(1, 2).reshape(f.shape) for c, f in zip(chunks, feats)]

    # -------------------------------------------------------------------- train
    def loss(self, feats: list[Tensor], data_samples: list[Any]
             ) -> tuple[dict[str, Tensor], list[Tensor]]:
        """One-to-one losses of every decoder layer and of the encoder proposals.

        Args:
            feats: L levels (B, C, h_l, w_l).
            data_samples: B ``DetDataSample`` with ``gt_instances`` (pixel xyxy boxes of
                ``img_shape``, labels) and metainfo ``img_shape``, ``batch_input_shape``.

        Returns:
            losses: ``loss_{cls,bbox,iou}`` (last layer), ``d{i}.loss_*`` (earlier layers),
                ``enc_loss_*`` (proposals, matched class-agnostically as class 0).
            memory: L levels (B, C, h_l, w_l) of the encoder output, for the aux heads.
        """
        metas = [s.metainfo for s in data_samples]
        gts = [s.gt_instances for s in data_samples]
        # float32 predictions (autocast): matching and losses in full precision
        out = self.forward(feats, data_samples)
        out.update(to_float32({key: out[key] for key in PREDICTION_KEYS}))
        losses = self.criterion.loss_layers(out['all_cls_scores'], out['all_bbox_preds'],
                                            metas, gt_instances_list=gts)
        # The encoder proposals are trained as a binary objectness score: every GT is class 0.
        binary = [InstanceData(bboxes=g.bboxes, labels=torch.zeros_like(g.labels)) for g in gts]
        losses.update(self.criterion.loss_layers(
            out['enc_cls_scores'][None], out['enc_bbox_preds'][None], metas,
            gt_instances_list=binary, prefix='enc_'))
        return losses, out['memory']

    @property
    def num_decoder_layers(self) -> int:
        """Decoder layers N; the detector folds it into the aux heads' loss weight."""
        return self.transformer.num_layers

    def loss_aux(self, memory: list[Tensor], positives: AuxPositives,
                 data_samples: list[Any], head_name: str) -> dict[str, Tensor]:
        """Losses of one aux head's positive queries: one decoder pass, fixed targets.

        ``pos_query_generators[head_name]`` makes the content and positional queries from the
        positive boxes (and their features); the boxes are the initial references; the
        queries attend to the L encoder levels. Given the ``EncodedLevels`` that :meth:`loss`
        returned, the pass reuses its flattened memory, masks and the decoder's value
        projections; given plain maps, it flattens them afresh.

        Args:
            memory: L maps (B, C, h_l, w_l), the encoder output :meth:`loss` returned.
            positives: the aux head's positives (pixel xyxy of the network input).
            data_samples: with metainfo ``img_shape`` and ``batch_input_shape``.
            head_name: the aux head's name in ``model.aux_heads``.

        Returns:
            ``loss_{cls,bbox,iou}`` (last layer) and ``d{i}.loss_*`` (earlier layers), raw.
        """
        generator = get_generator(self.pos_query_generators, head_name)
        metas = [s.metainfo for s in data_samples]
        boxes, targets = aux_query_targets(positives, metas, self.num_classes)
        query, query_pos = generator(boxes, positives.feats)
        if isinstance(memory, EncodedLevels):
            flat_memory, flat, value_cache = memory.shared
        else:
            flat = self._flatten(memory, data_samples)
            flat_memory, value_cache = flat.feats, None
        # the reference boxes stay float32 when the queries are autocast's bfloat16
        boxes = boxes.to(query.device, at_least_float32(query.dtype))
        hidden, refs = self.transformer.decode(query, query_pos, flat_memory, flat, boxes,
                                               self.reg_branches, value_cache)
        cls_scores, bbox_preds = to_float32(self.predict_layers(hidden, refs))
        return self.criterion.loss_layers(cls_scores, bbox_preds, metas, targets=targets)

    def encode_memory(self, feats: list[Tensor], data_samples: list[Any]) -> list[Tensor]:
        """The encoder output as L maps (B, C, h_l, w_l), without decoding (aux evaluation)."""
        return self._split_levels(self.transformer.encode(self._flatten(feats, data_samples)),
                                  feats)

    # ---------------------------------------------------------------- inference
    def predict(self, feats: list[Tensor], data_samples: list[Any],
                rescale: bool = True) -> list[InstanceData]:
        """Detections of the last decoder layer.

        Returns:
            B ``InstanceData`` with ``bboxes (K, 4)`` xyxy pixels (of ``ori_shape`` when
            ``rescale``, else of ``img_shape``), ``scores (K,)``, ``labels (K,)``,
            K <= ``test_cfg['max_per_img']``.
        """
        return self.predict_with_memory(feats, data_samples, rescale)[0]

    def predict_with_memory(self, feats: list[Tensor], data_samples: list[Any],
                            rescale: bool = True) -> tuple[list[InstanceData], list[Tensor]]:
        """:meth:`predict`'s detections and the encoder output as L maps (B, C, h_l, w_l),
        from one pass (the detector predicts masks for these boxes on that memory)."""
        out = self.forward(feats, data_samples)
        out.update(to_float32({key: out[key] for key in PREDICTION_KEYS}))
        cfg = self.test_cfg
        # With NMS the official head post-processes all num_queries top pairs, then caps.
        top_k = cfg['max_per_img'] if cfg['nms'] is None else self.num_queries
        results = []
        for cls_score, bbox_pred, sample in zip(out['all_cls_scores'][-1],
                                                out['all_bbox_preds'][-1], data_samples):
            result = detr_postprocess(cls_score, bbox_pred, sample.metainfo, max_per_img=top_k,
                                      score_thr=cfg['score_thr'], nms=cfg['nms'],
                                      rescale=rescale)
            results.append(result[:cfg['max_per_img']])
        return results, out['memory']
