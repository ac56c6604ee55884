"""DetTTAModel: views mapped back and merged; identity TTA = plain predictions; flip TTA."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from codetr.datasets.synthetic import make_synthetic_dataset
from codetr.models.detectors.det_tta import DetTTAModel, branch_test_cfg
from codetr.models.layers.nms import batched_nms
from codetr.registry import DATASETS, MODELS
from codetr.structures import DetDataSample

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_quickstart_synthetic.py'
META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
             'flip_direction')


class _Stub(torch.nn.Module):
    """A detector with only what DetTTAModel reads (test_step is never called here)."""

    def __init__(self, test_cfg: dict | None = None, eval_head: str | None = None) -> None:
        super().__init__()
        self.test_cfg, self.eval_head = test_cfg or {}, eval_head

    def test_step(self, data):  # pragma: no cover - required by BaseTTAModel
        raise AssertionError


def _view(boxes, scores, labels, flip: bool) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_id=7, ori_shape=(60, 100), flip=flip,
                                         flip_direction='horizontal' if flip else None))
    sample.pred_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                         scores=torch.tensor(scores), labels=torch.tensor(labels))
    return sample


def test_flipped_view_is_mapped_back_and_duplicates_merge():
    tta = DetTTAModel(_Stub(), tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                            max_per_img=5))
    plain = _view([[10., 10., 30., 40.]], [0.9], [1], flip=False)
    # In the flipped image (width 100) the same object is at x 70..90; a second one of
    # class 2 at x 0..20 is at x 80..100 of the original image.
    flipped = _view([[70., 10., 90., 40.], [0., 0., 20., 20.]], [0.8, 0.5], [1, 2], flip=True)
    merged, = tta.merge_preds([[plain, flipped]])
    pred = merged.pred_instances
    assert pred.bboxes.tolist() == [[10., 10., 30., 40.], [80., 0., 100., 20.]]
    assert pred.scores.tolist() == pytest.approx([0.9, 0.5])
    assert pred.labels.tolist() == [1, 2]
    assert merged.metainfo['flip'] is False and merged.metainfo['img_id'] == 7
    tta.max_per_img = 1
    assert len(tta.merge_preds([[_view([[10., 10., 30., 40.]], [0.9], [1], False),
                                 flipped]])[0].pred_instances) == 1


def test_single_view_keeps_the_predictions_and_unflips_them():
    tta = DetTTAModel(_Stub())
    plain = _view([[10., 10., 30., 40.], [12., 10., 30., 40.]], [0.9, 0.8], [1, 1], flip=False)
    out, = tta.merge_preds([[plain]])
    assert out.pred_instances.bboxes.tolist() == [[10., 10., 30., 40.], [12., 10., 30., 40.]]
    flipped, = tta.merge_preds([[_view([[70., 10., 90., 40.]], [0.9], [1], flip=True)]])
    assert flipped.pred_instances.bboxes.tolist() == [[10., 10., 30., 40.]]


def test_masks_are_unflipped_and_follow_their_kept_boxes():
    tta = DetTTAModel(_Stub(), tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                            max_per_img=5))
    plain = _view([[10., 10., 30., 40.]], [0.7], [1], flip=False)
    plain.pred_instances.masks = torch.zeros(1, 60, 100, dtype=torch.bool)
    plain.pred_instances.masks[0, 10:40, 10:30] = True
    # the flipped view scores higher, so its (unflipped) mask is the one kept
    flipped = _view([[70., 10., 90., 40.]], [0.9], [1], flip=True)
    flipped.pred_instances.masks = torch.zeros(1, 60, 100, dtype=torch.bool)
    flipped.pred_instances.masks[0, 10:40, 70:85] = True  # x 70..84 -> 15..29 unflipped
    merged, = tta.merge_preds([[plain, flipped]])
    pred = merged.pred_instances
    assert pred.bboxes.tolist() == [[10., 10., 30., 40.]] and pred.scores.tolist() == [
        pytest.approx(0.9)]
    expected = torch.zeros(60, 100, dtype=torch.bool)
    expected[10:40, 15:30] = True
    assert torch.equal(pred.masks[0], expected)
    single, = tta.merge_preds([[flipped]])
    assert torch.equal(single.pred_instances.masks[0], expected)


def test_settings_come_from_the_predicting_branch():
    detr = DetTTAModel(_Stub(dict(query_head=dict(
        max_per_img=300, nms=dict(type='soft_nms', iou_threshold=0.8)))))
    assert detr.nms_cfg == dict(type='soft_nms', iou_threshold=0.8) and detr.max_per_img == 300
    rcnn = _Stub(dict(rcnn=dict(rpn=dict(nms=dict(type='nms', iou_threshold=0.7)),
                                rcnn=dict(nms=dict(type='nms', iou_threshold=0.5),
                                          max_per_img=100))), eval_head='rcnn')
    assert branch_test_cfg(rcnn) == dict(nms=dict(type='nms', iou_threshold=0.5),
                                         max_per_img=100)
    plain = DetTTAModel(_Stub(dict(query_head=dict(max_per_img=30))))
    assert plain.nms_cfg == dict(type='nms', iou_threshold=0.5) and plain.max_per_img == 30
    explicit = DetTTAModel(_Stub(dict(query_head=dict(max_per_img=30))),
                           tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.6)))
    assert explicit.nms_cfg['iou_threshold'] == 0.6 and explicit.max_per_img == 30
    with pytest.raises(ValueError, match=r"unknown keys \['score_thr'\]"):
        DetTTAModel(_Stub(), tta_cfg=dict(score_thr=0.1))


@pytest.fixture(scope='module')
def quickstart(tmp_path_factory):
    """The quick-start Co-DINO (K = 2, random weights) and 2 synthetic images of 64..96 px."""
    root = tmp_path_factory.mktemp('synthetic')
    make_synthetic_dataset(root, 0, 2, seed=1, min_size=64, max_size=96)
    cfg = Config.fromfile(CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    return model, root


def _batch(root: Path, pipeline: list) -> dict:
    dataset = DATASETS.build(dict(
        type='CocoDataset', data_root=str(root), ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), test_mode=True, pipeline=pipeline, serialize_data=False,
        metainfo=dict(classes=('circle', 'square', 'triangle', 'star', 'cross', 'ring',
                               'hexagon', 'ellipse'))))
    return pseudo_collate([dataset[i] for i in range(len(dataset))])


def _tta_pipeline(flips: list[float]) -> list:
    return [dict(type='LoadImageFromFile'),
            dict(type='TestTimeAug', transforms=[
                [dict(type='Resize', scale=(96, 96), keep_ratio=True)],
                [dict(type='RandomFlip', prob=p) for p in flips],
                [dict(type='PackDetInputs', meta_keys=META_KEYS)]])]


PLAIN = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96), keep_ratio=True),
         dict(type='PackDetInputs', meta_keys=META_KEYS)]


def _preds(samples) -> list[tuple]:
    return [(s.pred_instances.bboxes, s.pred_instances.scores, s.pred_instances.labels)
            for s in samples]


def test_identity_tta_gives_exactly_the_plain_predictions(quickstart):
    model, root = quickstart
    tta = DetTTAModel(model)
    with torch.no_grad():
        plain = _preds(model.test_step(_batch(root, PLAIN)))
        identity = _preds(tta.test_step(_batch(root, _tta_pipeline([0.0]))))
    assert len(plain) == 2 and all(len(p[0]) == 30 for p in plain)
    for a, b in zip(plain, identity):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_flip_tta_merges_the_flipped_view_into_the_plain_one(quickstart):
    model, root = quickstart
    tta = DetTTAModel(model)  # soft-NMS 0.8, 30 boxes: the config's query_head test_cfg
    assert tta.nms_cfg == dict(type='soft_nms', iou_threshold=0.8) and tta.max_per_img == 30
    with torch.no_grad():
        plain = _preds(model.test_step(_batch(root, PLAIN)))
        flipped = _preds(tta.test_step(_batch(root, _tta_pipeline([1.0]))))  # unflipped
        merged = _preds(tta.test_step(_batch(root, _tta_pipeline([0.0, 1.0]))))
    for (pb, ps, pl), (fb, fs, fl), (mb, ms, ml) in zip(plain, flipped, merged):
        assert not torch.equal(pb, fb)  # the flipped view sees another image
        dets, keep = batched_nms(torch.cat([pb, fb]), torch.cat([ps, fs]), torch.cat([pl, fl]),
                                 copy.deepcopy(tta.nms_cfg))
        assert torch.equal(mb, dets[:30, :4]) and torch.equal(ms, dets[:30, 4])
        assert torch.equal(ml, torch.cat([pl, fl])[keep[:30]])
        assert not (torch.equal(mb, pb) and torch.equal(ms, ps))  # TTA changed them
