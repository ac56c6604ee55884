"""CoDABDETRHead: DAB-DETR (Liu et al., ICLR 2022) as Co-DETR's one-to-one branch.

One C5 map through DAB-DETR's encoder (DETR's, with the positional embedding rescaled per
layer); queries are learned 4-d anchor boxes with content starting at zero; the decoder derives
each layer's positional query from the anchors, modulates its cross-attention by the anchor's
width and height, and refines the anchors layer by layer with the shared box MLP. One classifier
and one box MLP serve every layer. Hungarian matching, focal / L1 / GIoU losses on every layer.

Positive queries (``loss_aux``): each aux head's positive boxes are the anchors, and that head's
``PositiveQueryGenerator`` (``mode='dino'``) embeds them into the content queries; one decoder
pass, fixed targets.
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

# DAB-DETR R50 (official repository; MMDetection's dab-detr_r50 config): 6 + 6 layers, 8
# heads, FFN 2048 with PReLU, no dropout, sine temperature 20, focal loss weight 1, L1 5,
# GIoU 2, top 300.
_FFN = dict(embed_dims=256, feedforward_channels=2048, ffn_drop=0.0, act_cfg=dict(type='PReLU'))
_COND_ATTN = dict(embed_dims=256, num_heads=8, attn_drop=0.0, proj_drop=0.0)
DAB_DETR_ENCODER = dict(
    type='DetrTransformerEncoder', num_layers=6, scale_pos=True,
    layer_cfg=dict(self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0), ffn_cfg=_FFN))
DAB_DETR_DECODER = dict(
    type='DabDetrTransformerDecoder', num_layers=6, modulate_hw_attn=True,
    layer_cfg=dict(self_attn_cfg=_COND_ATTN, cross_attn_cfg=_COND_ATTN, ffn_cfg=_FFN))
DEFAULT_POSITIONAL_ENCODING = dict(num_feats=128, temperature=20, normalize=True)
DEFAULT_LOSS_CLS = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                        loss_weight=1.0)
# Positive queries: the content query from the box embedding; the decoder makes the
# positional query from the anchors, as for the learned anchors.
DEFAULT_POS_QUERY_CFG = dict(mode='dino')
# Smallest positive-anchor side: padding slots are zero boxes, and the width-height modulation
# divides by the anchor's size.
MIN_ANCHOR_SIZE = 1e-4
# inverse_sigmoid clamp of the anchors when a layer's box is predicted (official DAB-DETR).
REFERENCE_EPS = 1e-5


@MODELS.register_module()
class CoDABDETRHead(BaseModule):
    """DAB-DETR one-to-one head with Co-DETR's positive-query branch.

    Parameter names: ``encoder.*``, ``decoder.*``, ``query_embedding`` (anchors, logits of
    ``cxcywh``), ``cls_branch``, ``reg_branch.layers.{0,1,2}``,
    ``pos_query_generators.<aux head>``.

    Args:
        num_classes: number of object classes.
        num_queries: anchor queries (300).
        encoder: :class:`DetrTransformerEncoder` config (default: the official R50 one,
            ``scale_pos=True``).
        decoder: :class:`DabDetrTransformerDecoder` config (default: official R50).
        positional_encoding: ``SinePositionalEncoding`` kwargs (temperature 20, normalised).
        loss_cls, loss_bbox, loss_iou: loss configs (focal 1, L1 5, GIoU 2).
        num_reg_layers: Linear layers of the box MLP (3).
        random_refpoints_xy: DAB-DETR's option: anchor centres start uniform in (0, 1). The
            official code means to freeze them, but sets ``requires_grad`` on a view of
            ``.data``, which freezes nothing; here too they learn.
        sync_cls_avg_factor: average the classification normaliser over ranks.
        train_cfg: ``dict(assigner=...)``; default Hungarian with focal 2, L1 5, GIoU 2.
        test_cfg: ``dict(max_per_img=300, score_thr=0.0, nms=None)``.
        aux_head_names: the detector's aux heads (set by :class:`CoDETR`).
        pos_query_cfg: :class:`PositiveQueryGenerator` kwargs over
            :data:`DEFAULT_POS_QUERY_CFG`.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_classes: int, num_queries: int = 300, encoder: dict | None = None,
                 decoder: dict | None = None, positional_encoding: dict | None = None,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 loss_iou: dict | None = None, num_reg_layers: int = 3,
                 random_refpoints_xy: bool = False, sync_cls_avg_factor: bool = True,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 aux_head_names: tuple[str, ...] = (), pos_query_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.random_refpoints_xy = random_refpoints_xy
        self.test_cfg = {'max_per_img': 300, 'score_thr': 0.0, 'nms': None, **(test_cfg or {})}
        self.encoder = MODELS.build(copy.deepcopy(encoder or DAB_DETR_ENCODER))
        self.decoder = MODELS.build(copy.deepcopy(decoder or DAB_DETR_DECODER))
        self.embed_dims = self.decoder.embed_dims
        if self.encoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder width {self.encoder.embed_dims} != decoder width '
                             f'{self.embed_dims}: give both the same embed_dims')
        pe_cfg = {'type': 'SinePositionalEncoding',
                  **copy.deepcopy(positional_encoding or DEFAULT_POSITIONAL_ENCODING)}
        self.positional_encoding = MODELS.build(pe_cfg)
        check_positional_encoding(self.positional_encoding, self.embed_dims)
        self.query_embedding = nn.Embedding(num_queries, 4)
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
        """Xavier transformer, focal prior on the classifier, zero last box layer; with
        ``random_refpoints_xy`` uniform anchor centres."""
        super().init_weights()
        init_prediction_branches(self.cls_branch, self.reg_branch)
        if self.random_refpoints_xy:
            with torch.no_grad():
                xy = self.query_embedding.weight[:, :2]
                xy.copy_(inverse_sigmoid(torch.rand_like(xy)))

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
        """(N, B, Q, C) decoder states and (N, B, Q, 4) anchors -> (N, B, Q, K) logits and
        (N, B, Q, 4) normalised ``cxcywh``: layer ``l`` refines ``references[l]``."""
        deltas = self.reg_branch(hidden_states)
        boxes = (deltas + inverse_sigmoid(references, REFERENCE_EPS)).sigmoid()
        return self.cls_branch(hidden_states), boxes

    def _anchors(self, batch: int) -> Tensor:
        """(B, Q, 4) learned anchors in (0, 1)."""
        return self.query_embedding.weight.sigmoid()[None].expand(batch, -1, -1)

    def _decode(self, mem: SingleScaleMemory, query: Tensor, anchors: Tensor
                ) -> tuple[Tensor, Tensor]:
        return self.decoder(query, mem.memory, mem.pos, mem.mask, anchors, self.reg_branch)

    def forward(self, feats: list[Tensor],
                data_samples: list[DetDataSample]) -> tuple[Tensor, Tensor]:
        """Inference pass.

        Returns:
            cls_scores (N, B, Q, num_classes) logits and bbox_preds (N, B, Q, 4) normalised
            ``cxcywh`` of ``img_shape``, one entry per decoder layer.
        """
        mem = self.encode(feats, data_samples)
        anchors = self._anchors(mem.memory.size(0))
        query = mem.memory.new_zeros(*anchors.shape[:2], self.embed_dims)
        return self.predict_layers(*self._decode(mem, query, anchors))

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
        anchors = self._anchors(mem.memory.size(0))
        query = mem.memory.new_zeros(*anchors.shape[:2], self.embed_dims)
        cls_scores, bbox_preds = to_float32(self.predict_layers(*self._decode(mem, query,
                                                                              anchors)))
        losses = self.criterion.loss_layers(
            cls_scores, bbox_preds, [s.metainfo for s in data_samples],
            gt_instances_list=[s.gt_instances for s in data_samples])
        return losses, EncodedLevels([mem.as_map()], mem)

    def loss_aux(self, memory: list[Tensor], positives: AuxPositives,
                 data_samples: list[DetDataSample], head_name: str) -> dict[str, Tensor]:
        """Losses of one aux head's positive queries: one decoder pass, fixed targets.

        The positive boxes (normalised ``cxcywh``, sides at least :data:`MIN_ANCHOR_SIZE`) are
        the anchors of the first layer; ``pos_query_generators[head_name]`` embeds them into
        the content queries. No attention mask between the positive queries, no matching.

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
        query, _ = generator(boxes, positives.feats)
        mem = memory.shared if isinstance(memory, EncodedLevels) else encode_single_map(
            memory, data_samples, self.positional_encoding)
        anchors = boxes.clamp(min=MIN_ANCHOR_SIZE, max=1.0).to(query.device,
                                                               at_least_float32(query.dtype))
        cls_scores, bbox_preds = to_float32(self.predict_layers(*self._decode(mem, query,
                                                                              anchors)))
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
