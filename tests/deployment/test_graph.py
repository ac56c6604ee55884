"""DetrGraph (run eagerly) computes CoDETR.predict's top-k, and unsupported models are
refused with a message saying what to change."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from codetr.deployment import DetrGraph, ExportError, check_exportable
from codetr.deployment.checks import left_out_masks
from codetr.deployment.graph import candidates_per_image
from codetr.models.query_heads import CoDeformDETRHead
from codetr.structures import DetDataSample

from .helpers import QUICKSTART_DEFORM, QUICKSTART_K2_MASK, build_model


def _batch(model, sizes: list[tuple[int, int]], seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
              for h, w in sizes]
    samples = [DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                           scale_factor=(1.0, 1.0))) for h, w in sizes]
    return model.data_preprocessor(dict(inputs=images, data_samples=samples), False)


NO_NMS = dict(model=dict(test_cfg=dict(query_head=dict(nms=None, max_per_img=50))))


@pytest.fixture(scope='module', params=['co_dino_k2_mask', 'deformable_detr'])
def model(request):
    """Without NMS (it follows the graph), so the graph's top-k is predict's output. The
    Co-DINO is the K = 2 quick start with masks from its rcnn head (test_cfg.mask_branch)."""
    config = QUICKSTART_K2_MASK if request.param == 'co_dino_k2_mask' else QUICKSTART_DEFORM
    return build_model(config, NO_NMS)


def test_graph_gives_the_models_top_k(model):
    data = _batch(model, [(150, 160), (128, 112)])
    sizes = torch.tensor([s.metainfo['img_shape'] for s in data['data_samples']])
    graph = DetrGraph(model)
    with torch.no_grad():
        expected = model.predict(data['inputs'], copy.deepcopy(data['data_samples']),
                                 rescale=False)
        boxes, scores, labels = graph(data['inputs'], sizes)
    assert boxes.shape == (2, graph.top_k, 4) and graph.top_k == model.query_head.test_cfg[
        'max_per_img']
    for i, sample in enumerate(expected):
        pred = sample.pred_instances
        assert torch.equal(pred.labels, labels[i])
        torch.testing.assert_close(pred.scores, scores[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(pred.bboxes, boxes[i], atol=1e-4, rtol=0)
        assert pred.scores[0] > 0.5 and pred.scores[-1] < pred.scores[0] - 0.1  # spread
        if model.mask_branch is not None:  # masks for predict's boxes; export keeps the boxes
            assert pred.masks.shape == (graph.top_k, *sample.metainfo['ori_shape'])
    # the model itself is untouched: its attention modules are not swapped
    assert type(model.query_head.transformer.encoder.layers[0].attentions[0]).__name__ == \
        'MultiScaleDeformableAttention'


def test_mask_branch_is_named_as_left_out(model):
    note = left_out_masks(model)
    if model.mask_branch is None:
        assert note is None
    else:
        assert "mask_branch='rcnn'" in note and 'model.test_cfg.mask_branch=None' in note


def test_candidates_before_nms(model):
    """Co-Deformable-DETR with NMS hands all num_queries pairs to NMS, then caps (as its
    predict does); otherwise the graph keeps max_per_img."""
    head = model.query_head
    cfg = dict(head.test_cfg)
    try:
        head.test_cfg.update(nms=dict(type='soft_nms', iou_threshold=0.8), max_per_img=7)
        expected = head.num_queries if isinstance(head, CoDeformDETRHead) else 7
        assert candidates_per_image(head) == expected
        head.test_cfg.update(nms=None)
        assert candidates_per_image(head) == 7
    finally:
        head.test_cfg.clear()
        head.test_cfg.update(cfg)


class _OtherBackbone(nn.Module):
    def forward(self, x):
        return (x,)


def test_unsupported_backbone_and_attention_are_refused(quickstart_model):
    model = copy.deepcopy(quickstart_model)
    model.backbone = _OtherBackbone()
    with pytest.raises(ExportError, match='_OtherBackbone.*supported: ResNet'):
        DetrGraph(model)

    class MyMultiScaleDeformableAttention(nn.Module):
        pass

    model = copy.deepcopy(quickstart_model)
    model.query_head.transformer.encoder.layers[0].attentions[0] = \
        MyMultiScaleDeformableAttention()
    with pytest.raises(ExportError, match='MyMultiScaleDeformableAttention.*'
                                          "type='MultiScaleDeformableAttention'"):
        check_exportable(model)
