"""CoConditionalDETRHead: Conditional-DETR (Meng et al., ICCV 2021) as Co-DETR's one-to-one branch.

One C5 map through a standard DETR encoder; learned positional queries with content queries
starting at zero; each query's 2-d reference point comes from its positional query, and the
decoder's cross-attention uses the conditional spatial query built around it. One classifier and
one box MLP are shared by all decoder layers; a layer's box is its MLP output with the
reference point's logit added to the centre. Hungarian matching, focal / L1 / GIoU losses on
every layer.

Positive queries (``loss_aux``): each aux head's positive boxes give the reference points (their
centres) and, through that head's ``PositiveQueryGenerator`` (``mode='deformable'``), the content
and positional queries; one decoder pass, fixed targets.
"""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS
from codetr.structures import DetDataSample

from ..co_modules import AuxPositives
from ..layers.transformer import inverse_sigmoid
from ..utils import at_least_float32, to_float32
from .aux_queries import (
    EncodedLevels,
    aux_query_targets,
    build_pos_query_generators,
    get_generator,
)
from .detr_criterion import DetrCriterion
from .single_scale import (
    DEFAULT_LOSS_BBOX,
    DEFAULT_LOSS_IOU,
    DETR_MATCH_COSTS,
    SingleScaleMemory,
    check_positional_encoding,
    detections,
    encode_single_map,
    init_prediction_branches,
    prediction_branches,
)

# Conditional-DETR R50 (official repository; MMDetection's conditional-detr_r50 config):
# 6 + 6 layers, 8 heads, FFN 2048, dropout 0.1, focal loss weight 2, L1 5, GIoU 2, top 100.
_DROP = 0.1
_FFN = dict(embed_dims=256, feedforward_channels=2048, ffn_drop=_DROP)
_COND_ATTN = dict(embed_dims=256, num_heads=8, attn_drop=_DROP, proj_drop=_DROP)
CONDITIONAL_DETR_ENCODER = dict(
    type='DetrTransformerEncoder', num_layers=6,
    layer_cfg=dict(self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=_DROP), ffn_cfg=_FFN))
CONDITIONAL_DETR_DECODER = dict(
    type='ConditionalDetrTransformerDecoder', num_layers=6,
    layer_cfg=dict(self_attn_cfg=_COND_ATTN, cross_attn_cfg=_COND_ATTN, ffn_cfg=_FFN))
DEFAULT_POSITIONAL_ENCODING = dict(num_feats=128, temperature=10000, normalize=True)
DEFAULT_LOSS_CLS = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                        loss_weight=2.0)
# Positive queries: content and positional halves from the box embedding, no anchor feature.
DEFAULT_POS_QUERY_CFG = dict(mode='deformable', with_coord_feat=False)
# inverse_sigmoid clamp of the reference points (official Conditional-DETR).
REFERENCE_EPS = 1e-5


@MODELS.register_module()
class CoConditionalDETRHead(BaseModule):
    """Conditional-DETR one-to-one head with Co-DETR's positive-query branch.

    Parameter names: ``encoder.*``, ``decoder.*``, ``query_embedding`` (positional queries),
    ``positional_encoding`` (no parameters), ``cls_branch``, ``reg_branch.layers.{0,1,2}``,
    ``pos_query_generators.<aux head>``.

    Args:
        num_classes: number of object classes.
        num_queries: matching queries (300).
        encoder: :class:`DetrTransformerEncoder` config (default: the official R50 one).
        decoder: :class:`ConditionalDetrTransformerDecoder` config (default: official R50).
        positional_encoding: ``SinePositionalEncoding`` kwargs (temperature 10000, normalised).
        loss_cls, loss_bbox, loss_iou: loss configs (focal 2, L1 5, GIoU 2).
        num_reg_layers: Linear layers of the box MLP (3).
        sync_cls_avg_factor: average the classification normaliser over ranks.
        train_cfg: ``dict(assigner=...)``; default Hungarian with focal 2, L1 5, GIoU 2.
        test_cfg: ``dict(max_per_img=100, score_thr=0.0, nms=None)``.
        aux_head_names: the detector's aux heads (set by :class:`CoDETR`).
        pos_query_cfg: :class:`PositiveQueryGenerator` kwargs over
            :data:`DEFAULT_POS_QUERY_CFG`.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_classes: int, num_queries: int = 300, encoder: dict | None = None,
                 decoder: dict | None = None, positional_encoding: dict | None = None,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 loss_iou: dict | None = None, num_reg_layers: int = 3,
                 sync_cls_avg_factor: bool = True, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, aux_head_names: tuple[str, ...] = (),
                 pos_query_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.test_cfg = {'max_per_img': 100, 'score_thr': 0.0, 'nms': None, **(test_cfg or {})}
        self.encoder = MODELS.build(copy.deepcopy(encoder or CONDITIONAL_DETR_ENCODER))
        self.decoder = MODELS.build(copy.deepcopy(decoder or CONDITIONAL_DETR_DECODER))
        self.embed_dims = self.decoder.embed_dims
        if self.encoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder width {self.encoder.embed_dims} != decoder width '
                             f'{self.embed_dims}: give both the same embed_dims')
        pe_cfg = {'type': 'SinePositionalEncoding',
                  **copy.deepcopy(positional_encoding or DEFAULT_POSITIONAL_ENCODING)}
        self.positional_encoding = MODELS.build(pe_cfg)
        check_positional_encoding(self.positional_encoding, self.embed_dims)
        self.query_embedding = nn.Embedding(num_queries, self.embed_dims)
        self.cls_branch, self.reg_branch = prediction_branches(self.embed_dims, num_classes,
                                                               num_reg_layers)
        assigner = (train_cfg or {}).get('assigner', dict(type='HungarianAssigner',
                                                          match_costs=DETR_MATCH_COSTS))
        self.criterion = DetrCriterion(
            num_classes, copy.deepcopy(loss_cls or DEFAULT_LOSS_CLS),
            copy.deepcopy(loss_bbox or DEFAULT_LOSS_BBOX),
            copy.deepcopy(loss_iou or DEFAULT_LOSS_IOU), assigner=copy.deepcopy(assigner),
            sync_cls_avg_factor=sync_cls_avg_factor)
        self.pos_query_generators = build_pos_query_generators(
            aux_head_names, self.embed_dims, {**DEFAULT_POS_QUERY_CFG, **(pos_query_cfg or {})})

    def init_weights(self) -> None:
        """Xavier transformer, focal prior on the classifier, zero last box layer."""
        super().init_weights()
        init_prediction_branches(self.cls_branch, self.reg_branch)

    @property
    def num_decoder_layers(self) -> int:
        """Decoder layers N; the detector folds it into the aux heads' loss weight."""
        return len(self.decoder.layers)

    # ------------------------------------------------------------------ forward
    def encode(self, feats: list[Tensor], data_samples: list[DetDataSample]) -> SingleScaleMemory:
        """One map (B, C, h, w) -> the encoder output, flattened with its positions and mask."""
        return encode_single_map(feats, data_samples, self.positional_encoding, self.encoder)

    def predict_layers(self, hidden_states: Tensor,
                       references: Tensor) -> tuple[Tensor, Tensor]:
        """(N, B, Q, C) decoder states and (B, Q, 2) reference points -> (N, B, Q, K) logits
        and (N, B, Q, 4) normalised ``cxcywh`` (the reference's logit added to the centre)."""
        deltas = self.reg_branch(hidden_states)
        centre = deltas[..., :2] + inverse_sigmoid(references, REFERENCE_EPS)
        boxes = torch.cat([centre, deltas[..., 2:]], dim=-1).sigmoid()
        return self.cls_branch(hidden_states), boxes

    def _decode(self, mem: SingleScaleMemory) -> tuple[Tensor, Tensor]:
        """The matching queries through the decoder: (N, B, Q, C) states, (B, Q, 2) points."""
        batch = mem.memory.size(0)
        query_pos = self.query_embedding.weight[None].expand(batch, -1, -1)
        query = torch.zeros_like(query_pos)
        return self.decoder(query, query_pos, mem.memory, mem.pos, mem.mask)

    def forward(self, feats: list[Tensor],
                data_samples: list[DetDataSample]) -> tuple[Tensor, Tensor]:
        """Inference pass.

        Returns:
            cls_scores (N, B, Q, num_classes) logits and bbox_preds (N, B, Q, 4) normalised
            ``cxcywh`` of ``img_shape``, one entry per decoder layer.
        """
        return self.predict_layers(*self._decode(self.encode(feats, data_samples)))

    # -------------------------------------------------------------------- train
    def loss(self, feats: list[Tensor], data_samples: list[DetDataSample]
             ) -> tuple[dict[str, Tensor], list[Tensor]]:
        """One-to-one losses of every decoder layer.

        Args:
            feats: one map (B, C, h, w).
            data_samples: with ``gt_instances`` (pixel xyxy) and metainfo ``img_shape``,
                ``batch_input_shape``.

        Returns:
            losses: ``loss_{cls,bbox,iou}`` (last layer) and ``d{i}.loss_*`` (earlier layers).
            memory: the encoder output as one map (B, C, h, w), an ``EncodedLevels`` that lets
                :meth:`loss_aux` reuse the flattened memory.
        """
        mem = self.encode(feats, data_samples)
        cls_scores, bbox_preds = to_float32(self.predict_layers(*self._decode(mem)))
        losses = self.criterion.loss_layers(
            cls_scores, bbox_preds, [s.metainfo for s in data_samples],
            gt_instances_list=[s.gt_instances for s in data_samples])
        return losses, EncodedLevels([mem.as_map()], mem)

    def loss_aux(self, memory: list[Tensor], positives: AuxPositives,
                 data_samples: list[DetDataSample], head_name: str) -> dict[str, Tensor]:
        """Losses of one aux head's positive queries: one decoder pass, fixed targets.

        The positive boxes' centres are the reference points; ``pos_query_generators
        [head_name]`` embeds the boxes into content and positional queries. No attention mask
        between the positive queries, no matching.

        Args:
            memory: what :meth:`loss` returned (or plain maps, flattened afresh).
            positives: the aux head's positives (pixel xyxy of the network input).
            data_samples: with metainfo ``img_shape`` and ``batch_input_shape``.
            head_name: the aux head's name in ``model.aux_heads``.

        Returns:
            ``loss_{cls,bbox,iou}`` and ``d{i}.loss_*``, raw.
        """
        generator = get_generator(self.pos_query_generators, head_name)
        metas = [s.metainfo for s in data_samples]
        boxes, targets = aux_query_targets(positives, metas, self.num_classes)
        query, query_pos = generator(boxes, positives.feats)
        mem = (memory.shared if isinstance(memory, EncodedLevels)
               else encode_single_map(memory, data_samples, self.positional_encoding))
        centres = boxes[..., :2].clamp(0.0, 1.0).to(query.device,
                                                     at_least_float32(query.dtype))
        hidden, refs = self.decoder(query, query_pos, mem.memory, mem.pos, mem.mask,
                                    reference_points=centres)
        cls_scores, bbox_preds = to_float32(self.predict_layers(hidden, refs))
        return self.criterion.loss_layers(cls_scores, bbox_preds, metas, targets=targets)

    def encode_memory(self, feats: list[Tensor],
                      data_samples: list[DetDataSample]) -> list[Tensor]:
        """The encoder output as one map (B, C, h, w), without decoding (aux evaluation)."""
        return [self.encode(feats, data_samples).as_map()]

    # ---------------------------------------------------------------- inference
    def predict(self, feats: list[Tensor], data_samples: list[DetDataSample],
                rescale: bool = True) -> list[InstanceData]:
        """Detections of the last decoder layer: B ``InstanceData`` with ``bboxes (K, 4)``
        xyxy pixels, ``scores (K,)``, ``labels (K,)``, ``K <= test_cfg['max_per_img']``."""
        cls_scores, bbox_preds = to_float32(self.forward(feats, data_samples))
        return detections(cls_scores[-1], bbox_preds[-1], data_samples, self.test_cfg, rescale)

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, num_queries={self.num_queries}'
