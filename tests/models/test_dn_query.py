"""CdnQueryGenerator: shapes, padding, targets, attention mask, noise rules, devices."""
from __future__ import annotations

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.layers.dn_query import CdnQueryGenerator, dn_query_layout
from codetr.registry import MODELS
from codetr.structures import DetDataSample, bbox_cxcywh_to_xyxy

NUM_CLASSES = 5
EMBED = 8
NUM_MATCHING = 3


def _sample(boxes: list[list[float]], labels: list[int], img_shape=(100, 200)) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=img_shape))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4),
                                       labels=torch.tensor(labels, dtype=torch.long))
    return sample


def _generator(**kwargs) -> CdnQueryGenerator:
    cfg = dict(type='CdnQueryGenerator', num_classes=NUM_CLASSES, embed_dims=EMBED,
               num_matching_queries=NUM_MATCHING, **kwargs)
    return MODELS.build(cfg)


BOX = [60.0, 30.0, 100.0, 50.0]  # in a 100 x 200 (h x w) image: cxcywh (0.4, 0.4, 0.2, 0.2)


def test_shapes_padding_and_targets_for_0_1_3_gts() -> None:
    torch.manual_seed(0)
    gen = _generator()
    batch = [_sample([], []), _sample([BOX], [2]), _sample([BOX] * 3, [0, 1, 4])]
    label_q, bbox_q, mask, meta = gen(batch)
    groups = 100 // 3  # dynamic: num_dn_queries // max GT per image
    num_dn = 2 * 3 * groups
    assert meta['num_denoising_groups'] == groups and meta['num_denoising_queries'] == num_dn
    assert label_q.shape == (3, num_dn, EMBED) and bbox_q.shape == (3, num_dn, 4)
    assert mask.shape == (num_dn + NUM_MATCHING,) * 2 and mask.dtype == torch.bool

    gt_idx, positive = meta['gt_indices'], meta['positive_mask']
    assert gt_idx.shape == positive.shape == (3, num_dn)
    per_half = torch.arange(num_dn) % 3  # slot within each half-group
    half_is_positive = (torch.arange(num_dn) // 3) % 2 == 0
    assert torch.equal(gt_idx[0], torch.full((num_dn,), -1))
    assert torch.equal(gt_idx[1], torch.where(per_half == 0, 0, -1))
    assert torch.equal(gt_idx[2], per_half)
    assert torch.equal(positive[2], half_is_positive)
    assert torch.equal(positive[1], half_is_positive & (per_half == 0))
    assert int(positive.sum()) == groups * (0 + 1 + 3)
    # padding slots carry zeros in both queries; real slots do not
    padding = gt_idx < 0
    assert torch.all(label_q[padding] == 0) and torch.all(bbox_q[padding] == 0)
    assert torch.all(label_q[~padding].abs().sum(-1) > 0)


def test_one_gt_uses_all_dn_queries() -> None:
    label_q, bbox_q, mask, meta = _generator()([_sample([BOX], [1])])
    assert meta['num_denoising_groups'] == 100 and meta['num_denoising_queries'] == 200
    assert label_q.shape == (1, 200, EMBED) and mask.shape == (203, 203)
    static = _generator(group_cfg=dict(dynamic=False, num_groups=4))
    assert static([_sample([BOX] * 7, [0] * 7)])[3]['num_denoising_queries'] == 2 * 7 * 4


def test_no_gt_batch() -> None:
    label_q, bbox_q, mask, meta = _generator()([_sample([], []), _sample([], [])])
    assert label_q.shape == (2, 0, EMBED) and bbox_q.shape == (2, 0, 4)
    assert meta['num_denoising_queries'] == 0 and meta['num_denoising_groups'] == 1
    assert meta['gt_indices'].shape == (2, 0)
    assert torch.equal(mask, torch.zeros(NUM_MATCHING, NUM_MATCHING, dtype=torch.bool))


def test_attention_mask_two_groups_of_two() -> None:
    gen = _generator(group_cfg=dict(dynamic=False, num_groups=2))
    mask = gen([_sample([BOX, BOX], [0, 1]), _sample([BOX], [3])])[2]
    # rows attend to columns where 0; dn queries 0-3 = group 0, 4-7 = group 1, 8-10 matching
    expected = torch.tensor([[int(c) for c in row] for row in [
        '00001111000', '00001111000', '00001111000', '00001111000',
        '11110000000', '11110000000', '11110000000', '11110000000',
        '11111111000', '11111111000', '11111111000']], dtype=torch.bool)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize('scale', [1.0, 0.4])
def test_box_noise_bands(scale: float) -> None:
    torch.manual_seed(1)
    gen = _generator(box_noise_scale=scale)
    boxes = torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.45, 0.45, 0.5, 0.55]])  # far from the border
    groups = 200
    noisy = gen.add_box_noise(boxes, groups).view(2 * groups, 2, 4)
    delta = (noisy - boxes).abs()
    band = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2) / 2 * scale  # (w, h, w, h) / 2 * scale
    pos, neg = delta[0::2] / band, delta[1::2] / band  # in units of the band
    assert pos.max() < 1 + 1e-5 and pos.min() < 0.05
    assert neg.min() >= 1 - 1e-5 and neg.max() < 2 + 1e-5 and neg.max() > 1.9
    # random sign: both directions occur for every coordinate
    signs = torch.sign(noisy - boxes)[0::2]
    assert torch.all((signs > 0).any(0)) and torch.all((signs < 0).any(0))


def test_box_noise_clamps_and_bbox_query_decodes() -> None:
    torch.manual_seed(2)
    gen = _generator()
    edge = torch.tensor([[0.0, 0.0, 0.5, 1.0]])
    assert gen.add_box_noise(edge, 50).min() >= 0 and gen.add_box_noise(edge, 50).max() <= 1
    # end to end: positive box queries decode to boxes within the positive band of the GT
    _, bbox_q, _, meta = gen([_sample([BOX, [20.0, 10.0, 60.0, 90.0]], [0, 1])])
    decoded = bbox_cxcywh_to_xyxy(bbox_q[0].sigmoid()) * torch.tensor([200.0, 100, 200, 100])
    gts = torch.tensor([BOX, [20.0, 10.0, 60.0, 90.0]])[meta['gt_indices'][0]]
    pos = meta['positive_mask'][0]
    half_wh = (gts[:, 2:] - gts[:, :2]).repeat(1, 2) / 2
    assert torch.all((decoded[pos] - gts[pos]).abs() <= half_wh[pos] + 1e-3)


def test_label_noise_rate() -> None:
    torch.manual_seed(3)
    gen = _generator(label_noise_scale=0.5)
    labels = torch.zeros(100, dtype=torch.long)
    noisy = gen.add_label_noise(labels, 100)  # 20,000 draws
    assert noisy.shape == (20000,) and noisy.min() >= 0 and noisy.max() < NUM_CLASSES
    # P(changed) = scale * 0.5 * (1 - 1 / num_classes): a replacement may draw the same class
    expected = 0.5 * 0.5 * (1 - 1 / NUM_CLASSES)
    assert abs((noisy != 0).float().mean().item() - expected) < 0.015  # ~5 sigma
    # every other class is drawn about equally often
    counts = torch.bincount(noisy[noisy != 0], minlength=NUM_CLASSES)[1:].float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    assert torch.equal(_generator(label_noise_scale=0.0).add_label_noise(labels, 3),
                       labels.repeat(6))


def test_label_query_is_embedding_of_noisy_label() -> None:
    torch.manual_seed(4)
    gen = _generator(label_noise_scale=1.0)
    label_q, _, _, meta = gen([_sample([BOX] * 2, [3, 3])])
    real = meta['gt_indices'][0] >= 0
    same = (label_q[0][real][:, None] == gen.label_embedding.weight[None]).all(-1)  # (200, C)
    assert torch.equal(same.sum(-1), torch.ones(200, dtype=torch.long))  # exactly one class
    kept = same[:, 3].float().mean().item()
    assert abs(kept - (1 - 0.5 * (1 - 1 / NUM_CLASSES))) < 0.08  # 200 draws, ~4 sigma


def test_new_tensors_follow_embedding_dtype_and_device() -> None:
    gen = _generator().double()
    label_q, bbox_q, mask, meta = gen([_sample([BOX], [1])])
    assert label_q.dtype == bbox_q.dtype == torch.float64
    assert label_q.device == bbox_q.device == mask.device == meta['gt_indices'].device
    meta_gen = _generator().to('meta')  # no data-dependent shapes, no hard-coded device
    label_q, bbox_q, mask, meta = meta_gen([_sample([BOX], [1]), _sample([BOX] * 2, [0, 2])])
    assert label_q.is_meta and bbox_q.is_meta and mask.is_meta
    assert label_q.shape == (2, 200, EMBED) and meta['positive_mask'].is_meta


def test_layout_and_inverse_sigmoid() -> None:
    layout = dn_query_layout([2, 1], num_groups=1)
    assert layout['batch_idx'].tolist() == [0, 0, 1, 0, 0, 1]
    assert layout['query_idx'].tolist() == [0, 1, 0, 2, 3, 2]
    assert layout['gt_idx'].tolist() == [0, 1, 0, 0, 1, 0]
    assert layout['positive'].tolist() == [True] * 3 + [False] * 3


def test_bbox_query_logits_are_clamped_at_dn_eps() -> None:
    """A noisy box flattened against the image border gives logit log(1e-3) = -6.9078."""
    torch.manual_seed(5)
    gen = _generator(box_noise_scale=2.0)
    _, bbox_q, _, meta = gen([_sample([[0.0, 0.0, 200.0, 100.0]], [0])])  # the whole image
    assert bbox_q.min().item() == pytest.approx(-6.907755, abs=1e-4)
    assert bbox_q.max().item() <= 6.907755 + 1e-4


def test_user_errors() -> None:
    with pytest.raises(ValueError, match='num_classes'):
        _generator()([_sample([BOX], [NUM_CLASSES])])
    with pytest.raises(ValueError, match='num_groups'):
        _generator(group_cfg=dict(dynamic=False))
    with pytest.raises(KeyError, match='img_shape'):
        sample = DetDataSample()
        sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                           labels=torch.zeros(0, dtype=torch.long))
        _generator()([sample])
