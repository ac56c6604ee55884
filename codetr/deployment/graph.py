"""The inference path of a Co-DETR detector as one traceable module.

:class:`DetrGraph` maps a normalised, padded image batch and the image sizes to the query
head's top-k detections, with nothing but tensor operations in between: no data samples, no
metainfo, no level sizes read back from tensors, and the deformable attention in standard
operators (:mod:`codetr.deployment.msda`). It reuses the model's own modules (backbone, neck,
positional encoding, encoder and decoder layers, prediction branches), so it computes what
``CoDETR.predict`` computes with ``test_cfg.eval_module='detr'``, up to the NMS / score
threshold / rescaling that :mod:`codetr.deployment.postprocess` applies afterwards.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from codetr.models.layers.transformer import get_valid_ratio
from codetr.models.query_heads import CoDeformDETRHead, CoDINOHead
from codetr.models.query_heads.co_deform_detr_transformer import FlatPyramid
from codetr.models.query_heads.co_dino_transformer import EncoderOutput
from codetr.structures import bbox_cxcywh_to_xyxy

from .checks import check_exportable
from .msda import Shapes, swap_deformable_attention
from .norms import swap_group_norm

INPUT_NAMES = ('images', 'img_sizes')
OUTPUT_NAMES = ('boxes', 'scores', 'labels')


def padding_masks(img_sizes: Tensor, input_hw: tuple[int, int], shapes: Shapes) -> list[Tensor]:
    """Per level (B, h_l, w_l) bool, True where the padded batch holds no image.

    The same masks as the query heads' ``level_padding_masks`` (a mask at the input size,
    resized to each level with nearest interpolation), computed from sizes alone: row ``y`` of
    a level of height ``h_l`` reads input row ``floor(y * H / h_l)``, in integer arithmetic.

    Args:
        img_sizes: (B, 2) long ``(h, w)`` of each unpadded image.
        input_hw: ``(H, W)`` of the padded batch.
        shapes: L ``(h_l, w_l)``.
    """
    input_h, input_w = input_hw
    img_h, img_w = img_sizes[:, 0, None, None], img_sizes[:, 1, None, None]  # [B, 1, 1]
    masks = []
    for height, width in shapes:
        rows = torch.arange(height, device=img_sizes.device) * input_h // height  # [h_l]
        cols = torch.arange(width, device=img_sizes.device) * input_w // width  # [w_l]
        masks.append((rows[None, :, None] >= img_h) | (cols[None, None, :] >= img_w))
    return masks


def top_detections(cls_logits: Tensor, boxes: Tensor, img_sizes: Tensor,
                   top_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k (query, class) pairs of a batch, as ``detr_postprocess`` before NMS.

    Args:
        cls_logits: (B, Q, C) class logits of the last decoder layer.
        boxes: (B, Q, 4) normalised ``cxcywh`` of each image's unpadded size.
        img_sizes: (B, 2) ``(h, w)`` of each unpadded image.
        top_k: pairs kept per image (at most Q * C).

    Returns:
        boxes (B, K, 4) xyxy in input pixels, clipped to the image; scores (B, K) sigmoid,
        descending; labels (B, K) long.
    """
    num_classes = cls_logits.shape[-1]
    scores, index = cls_logits.sigmoid().flatten(1).topk(top_k, dim=1)  # [B, K]
    labels = index % num_classes
    query = index // num_classes
    boxes = torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4))
    size_wh = img_sizes.flip(-1).to(boxes.dtype)  # [B, 2] (w, h)
    limits = torch.cat([size_wh, size_wh], -1)[:, None]  # [B, 1, 4]
    boxes = bbox_cxcywh_to_xyxy(boxes) * limits
    return boxes.clamp(min=0).minimum(limits), scores, labels


def _flatten(feats: list[Tensor], masks: list[Tensor], pos: list[Tensor],
             level_embeds: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(B, S, C) features, (B, S) mask, (B, S, C) positions + level embeddings, and the
    (B, L, 2) valid ratios, as the transformers' own flattening computes them."""
    flat = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)
    mask = torch.cat([m.flatten(1) for m in masks], 1)
    pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + level_embeds[level]
                          for level, p in enumerate(pos)], 1)
    valid_ratios = torch.stack([get_valid_ratio(m) for m in masks], 1)
    return flat, mask, pos_flat, valid_ratios


def co_dino_last_layer(head: CoDINOHead, feats: list[Tensor], masks: list[Tensor],
                       shapes: Shapes) -> tuple[Tensor, Tensor]:
    """CoDINOHead's inference pass: (B, Q, C) logits and (B, Q, 4) boxes of the last layer."""
    transformer = head.transformer
    pos = [head.positional_encoding(mask) for mask in masks]
    flat, mask, pos_flat, valid_ratios = _flatten(feats, masks, pos, transformer.level_embeds)
    memory = transformer.encoder(flat, pos_flat, mask, shapes, None, valid_ratios)
    enc = EncoderOutput(memory, mask, shapes, None, valid_ratios)
    selected = transformer.select_queries(enc, head.cls_branches[-1], head.reg_branches[-1])
    hidden, refs = transformer.decode(selected.query, selected.reference_points, enc,
                                      head.reg_branches)
    cls_scores, bbox_preds = head.predict_layers(hidden, refs)
    return cls_scores[-1], bbox_preds[-1]


def co_deform_detr_last_layer(head: CoDeformDETRHead, feats: list[Tensor],
                              masks: list[Tensor], shapes: Shapes) -> tuple[Tensor, Tensor]:
    """CoDeformDETRHead's inference pass: (B, Q, C) logits and (B, Q, 4) boxes, last layer."""
    transformer = head.transformer
    pos = [head.positional_encoding(mask).to(feat) for mask, feat in zip(masks, feats)]
    flat, mask, pos_flat, valid_ratios = _flatten(feats, masks, pos, transformer.level_embeds)
    pyramid = FlatPyramid(flat, mask, pos_flat, shapes, None, valid_ratios)
    memory = transformer.encode(pyramid)
    num_layers = transformer.num_layers
    _, _, reference, query_pos = transformer.select_proposals(
        memory, pyramid, head.cls_branches[num_layers], head.reg_branches[num_layers],
        head.num_queries)
    query = head.query_embedding.weight[None].expand(memory.size(0), -1, -1)
    hidden, refs = transformer.decode(query, query_pos, memory, pyramid, reference,
                                      head.reg_branches)
    cls_scores, bbox_preds = head.predict_layers(hidden, refs)
    return cls_scores[-1], bbox_preds[-1]


HEAD_PASSES = {CoDINOHead: co_dino_last_layer, CoDeformDETRHead: co_deform_detr_last_layer}


def candidates_per_image(head: nn.Module) -> int:
    """How many (query, class) pairs the exported graph returns per image: the head's
    ``max_per_img`` (``predict``'s top-k), or all ``num_queries`` when NMS follows in a
    Co-Deformable-DETR head, which then caps at ``max_per_img`` (as its ``predict`` does)."""
    cfg = head.test_cfg
    max_per_img = cfg.get('max_per_img', 100 if isinstance(head, CoDeformDETRHead) else 300)
    top_k = head.num_queries if (isinstance(head, CoDeformDETRHead) and cfg.get('nms')) \
        else max_per_img
    return min(top_k, head.num_queries * head.num_classes)


class DetrGraph(nn.Module):
    """Backbone, neck, encoder, decoder and top-k of a detector, tensors in and out.

    Built on a deep copy of ``model`` (whose deformable attentions are swapped for
    :class:`~codetr.deployment.msda.ExportableMSDA` and group norms for
    :class:`~codetr.deployment.norms.ExportableGroupNorm`); aux heads and the adapter are
    left out.

    Args:
        model: a built ``CoDETR`` with ``test_cfg.eval_module='detr'`` and a supported
            backbone and query head (:func:`~codetr.deployment.checks.check_exportable`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_exportable(model)
        self.backbone = copy.deepcopy(model.backbone).eval()
        self.neck = copy.deepcopy(model.neck).eval() if model.neck is not None else None
        self.head = copy.deepcopy(model.query_head).eval()
        swap_deformable_attention(self.head)
        swap_group_norm(self)  # ONNX Runtime's InstanceNormalization loses float32 digits
        self._head_pass = HEAD_PASSES[type(self.head)]
        self.top_k = candidates_per_image(self.head)

    def forward(self, images: Tensor, img_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Detections of a batch.

        Args:
            images: (B, 3, H, W) float, normalised and padded (bottom / right) as the
                model's data preprocessor makes it.
            img_sizes: (B, 2) int64 ``(h, w)`` of each image inside the padding
                (``img_shape``).

        Returns:
            boxes (B, K, 4) xyxy in input pixels, scores (B, K) descending, labels (B, K)
            int64; K = :attr:`top_k`.
        """
        feats = self.backbone(images)
        feats = list(self.neck(feats) if self.neck is not None else feats)
        shapes = [(feat.shape[-2], feat.shape[-1]) for feat in feats]
        masks = padding_masks(img_sizes, (images.shape[-2], images.shape[-1]), shapes)
        cls_logits, boxes = self._head_pass(self.head, feats, masks, shapes)
        return top_detections(cls_logits.float(), boxes.float(), img_sizes, self.top_k)
