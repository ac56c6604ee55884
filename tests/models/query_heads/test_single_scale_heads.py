"""CoConditionalDETRHead and CoDABDETRHead (single-scale C5 heads) at tiny widths."""
from __future__ import annotations

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.co_modules import AuxPositives
from codetr.models.query_heads.aux_queries import EncodedLevels
from codetr.registry import MODELS
from codetr.structures import DetDataSample, bbox_xyxy_to_cxcywh

from ..single_scale_models import KINDS, NUM_CLASSES, NUM_LAYERS, NUM_QUERIES, C, tiny_head_cfg

BATCH_SHAPE = (64, 96)  # padded input; the C5 map is 2 x 3
IMG_SHAPES = [(64, 96), (48, 64)]
# Per image 3 positive boxes (pixel xyxy); the last of image 1 is padding (bbox weight 0).
COORDS = torch.tensor([[[8., 8., 24., 30.], [30., 4., 90., 40.], [0., 32., 20., 60.]],
                       [[4., 6., 20., 22.], [16., 10., 40., 44.], [0., 0., 0., 0.]]])
TARGETS = COORDS + 2.0
LABELS = torch.tensor([[1, 2, 0], [2, 1, NUM_CLASSES]])


@pytest.fixture(scope='module')
def heads() -> dict:
    built = {}
    for kind in KINDS:
        torch.manual_seed(0)
        built[kind] = MODELS.build(tiny_head_cfg(kind, aux_head_names=('atss',),
                                                 test_cfg=dict(max_per_img=4)))
        built[kind].init_weights()
    return built


def _samples(scale: float = 1.0) -> list[DetDataSample]:
    samples = []
    for i, (h, w) in enumerate(IMG_SHAPES):
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), batch_input_shape=BATCH_SHAPE, scale_factor=(scale, scale),
            ori_shape=(round(h / scale), round(w / scale))))
        boxes = torch.tensor([[4., 6., 30., 40.], [20., 10., 60., 44.]])[:i + 1]
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.arange(i + 1))
        samples.append(sample)
    return samples


def _feats() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, C, BATCH_SHAPE[0] // 32, BATCH_SHAPE[1] // 32, generator=g)]


def _positives() -> AuxPositives:
    return AuxPositives(coords=COORDS.clone(), labels=LABELS.clone(), targets=TARGETS.clone(),
                        label_weights=torch.tensor([[1., 1., 1.], [1., 1., 0.]]),
                        bbox_weights=torch.tensor([[1., 1., 1.], [1., 1., 0.]]))


def _normalised_positives() -> torch.Tensor:
    """(2, 3, 4) cxcywh of COORDS over each image's img_shape."""
    factors = torch.tensor([[w, h, w, h] for h, w in IMG_SHAPES], dtype=torch.float)[:, None]
    return bbox_xyxy_to_cxcywh(COORDS / factors)


def _capture_decoder(head) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    seen: list = []
    handle = head.decoder.register_forward_hook(lambda m, args, out: seen.append(out[1]))
    return seen, handle


@pytest.mark.parametrize('kind', KINDS)
def test_outputs_keep_their_shapes_and_start_at_the_references(heads, kind):
    head = heads[kind].eval()
    seen, handle = _capture_decoder(head)
    with torch.no_grad():
        cls_scores, bbox_preds = head(_feats(), _samples())
    handle.remove()
    assert cls_scores.shape == (NUM_LAYERS, 2, NUM_QUERIES, NUM_CLASSES)
    assert bbox_preds.shape == (NUM_LAYERS, 2, NUM_QUERIES, 4)
    # The last box layer starts at zero: every layer predicts its reference unchanged.
    refs = seen[0]
    if kind == 'conditional':  # (B, Q, 2) points: centre = point, size = sigmoid(0)
        expected = torch.cat([refs, torch.full_like(refs, 0.5)], -1).expand_as(bbox_preds)
        torch.testing.assert_close(refs, head.decoder.reference_points(
            head.query_embedding.weight[None].expand(2, -1, -1)))
    else:  # (N, B, Q, 4) anchors, the first the learned ones
        expected = refs
        torch.testing.assert_close(refs[0], head.query_embedding.weight.sigmoid()[None].expand(
            2, -1, -1))
    torch.testing.assert_close(bbox_preds, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('kind', KINDS)
def test_loss_keys_and_memory(heads, kind):
    head = heads[kind].train()
    feats = _feats()
    losses, memory = head.loss(feats, _samples())
    names = {f'{p}loss_{n}' for p in ('', 'd0.') for n in ('cls', 'bbox', 'iou')}
    assert set(losses) == names
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert isinstance(memory, EncodedLevels) and len(memory) == 1
    assert memory[0].shape == feats[0].shape
    torch.testing.assert_close(memory[0].flatten(2).transpose(1, 2), memory.shared.memory)


@pytest.mark.parametrize('kind', KINDS)
def test_positive_queries_start_from_the_positive_boxes(heads, kind):
    """DAB: the decoder's first-layer anchors are the normalised positive boxes;
    Conditional: its reference points are their centres."""
    head = heads[kind].train()
    samples = _samples()
    _, memory = head.loss(_feats(), samples)
    seen, handle = _capture_decoder(head)
    losses = head.loss_aux(memory, _positives(), samples, 'atss')
    handle.remove()
    boxes = _normalised_positives()
    real = torch.tensor([[True, True, True], [True, True, False]])  # not the zero padding box
    first = seen[0][0] if kind == 'dab' else seen[0]
    expected = boxes if kind == 'dab' else boxes[..., :2]
    torch.testing.assert_close(first[real], expected[real])
    assert set(losses) == {f'{p}loss_{n}' for p in ('', 'd0.') for n in ('cls', 'bbox', 'iou')}
    # the same pass from plain maps (flattened afresh) gives the same losses
    again = head.loss_aux(list(memory), _positives(), samples, 'atss')
    for key, value in losses.items():
        torch.testing.assert_close(again[key], value, msg=key)
    with pytest.raises(KeyError, match="no positive-query generator for aux head 'rcnn'"):
        head.loss_aux(memory, _positives(), samples, 'rcnn')


@pytest.mark.parametrize('kind', KINDS)
def test_predict_caps_detections_and_rescales(heads, kind):
    head = heads[kind].eval()
    with torch.no_grad():
        scaled = head.predict(_feats(), _samples(scale=0.5))
        plain = head.predict(_feats(), _samples(scale=0.5), rescale=False)
    for result, unscaled, (h, w) in zip(scaled, plain, IMG_SHAPES):
        assert len(result) == 4 and result.bboxes.shape == (4, 4)
        torch.testing.assert_close(result.bboxes, unscaled.bboxes * 2)
        assert result.bboxes[:, 0::2].max() <= 2 * w and result.bboxes[:, 1::2].max() <= 2 * h


@pytest.mark.parametrize('kind', KINDS)
def test_more_than_one_level_is_refused(heads, kind):
    with pytest.raises(ValueError, match='takes one feature map'):
        heads[kind].loss(_feats() * 2, _samples())
