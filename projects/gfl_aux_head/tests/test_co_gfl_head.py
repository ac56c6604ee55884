"""CoGFLHead: integral decoding, ATSS assignment and the GFL losses on a hand-made box, the
positives handed on, a Co-DINO K = 1 training step, and the plugin's configs."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from codetr.registry import MODELS
from codetr.structures import DetDataSample, bbox_overlaps
from codetr.utils import register_all_modules
from projects.gfl_aux_head import CoGFLHead, Integral

PROJECT = Path(__file__).resolve().parents[1]
ROOT = PROJECT.parents[1]
CONFIG = PROJECT / 'configs' / 'co_dino_5scale_r50_k1_gfl_8xb2_1x_coco.py'
QUICKSTART = PROJECT / 'configs' / 'co_dino_r18_k1_gfl_quickstart_synthetic.py'
NUM_CLASSES = 2
WIDTH = 16

register_all_modules()


def make_sample(boxes: list[list[float]], labels: list[int], size: int = 64,
                scale: float = 1.0) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         batch_input_shape=(size, size),
                                         scale_factor=(scale, scale)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                       labels=torch.tensor(labels, dtype=torch.long))
    return sample


def build_head(strides=(8, 16, 32), octave_base_scale=4, topk=9, **kwargs) -> CoGFLHead:
    return MODELS.build(dict(
        type='CoGFLHead', num_classes=NUM_CLASSES, in_channels=WIDTH, feat_channels=WIDTH,
        norm_cfg=dict(type='GN', num_groups=4),
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales_per_octave=1,
                              octave_base_scale=octave_base_scale, strides=list(strides)),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=topk)), **kwargs))


def pyramid_for(size: int, strides, batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, WIDTH, size // s, size // s, requires_grad=True) for s in strides]


def test_integral_reads_the_expected_distance():
    """Softmax of log(1, 2, 3, 4) is (0.1, 0.2, 0.3, 0.4): expected bin 2.0; a peaked side
    reads its bin; a uniform one the middle, reg_max / 2."""
    integral = Integral(reg_max=3)
    sides = torch.stack([torch.tensor([1.0, 2.0, 3.0, 4.0]).log(),
                         torch.tensor([-30.0, 30.0, -30.0, -30.0]),
                         torch.zeros(4), torch.tensor([30.0, -30.0, -30.0, -30.0])])
    torch.testing.assert_close(integral(sides.reshape(1, 16)),
                               torch.tensor([[2.0, 1.0, 1.5, 0.0]]))
    head = build_head(reg_max=3)
    anchor = torch.tensor([[8.0, 8.0, 24.0, 24.0]])  # centre (16, 16)
    box = head.decode(anchor, torch.tensor([8.0]), sides.reshape(1, 16))
    # distances (left, top, right, bottom) = (2, 1, 1.5, 0) strides of 8 px
    torch.testing.assert_close(box, torch.tensor([[0.0, 8.0, 28.0, 16.0]]))


def test_atss_rule_and_gfl_losses_on_a_hand_made_box():
    """32 px image, strides 8 / 16, 16 / 32 px anchors, top-3 per level, GT (6, 6, 22, 20):
    ATSS keeps only the stride-8 anchor (8, 8, 24, 24) (test_co_atss_head has the IoUs).

    Zero conv weights: every class score is the prior 0.01, and every side distribution is
    uniform over 0..4, so each side reads 2 strides = 16 px: the box is (0, 0, 32, 32),
    IoU = GIoU = 16 * 14 / 32^2 with the GT. The targets (l, t, r, b) = (10, 10, 6, 4) px
    = (1.25, 1.25, 0.75, 0.5) strides; the DFL of a uniform distribution is ln 5 whatever
    the target. Box losses are weighted by the score 0.01; their sum < 1, so the divisor is 1.
    """
    head = build_head(strides=(8, 16), octave_base_scale=2, topk=3, reg_max=4)
    for layer in (head.gfl_cls, head.gfl_reg):
        torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(head.gfl_reg.bias)
    gt = [6.0, 6.0, 22.0, 20.0]
    losses, positives = head.loss(pyramid_for(32, (8, 16), batch=1), [make_sample([gt], [1],
                                                                                  size=32)])
    assert positives.bbox_weights.sum() == 1
    assert positives.coords[0, 0].tolist() == [8.0, 8.0, 24.0, 24.0]
    assert positives.targets[0, 0].tolist() == gt and positives.labels[0, 0] == 1
    assert (positives.labels[0, 1:] == NUM_CLASSES).all()

    p, iou = 0.01, 16 * 14 / 32 ** 2
    assert losses['loss_bbox'].item() == pytest.approx(2.0 * p * (1 - iou), rel=1e-4)
    assert losses['loss_dfl'].item() == pytest.approx(0.25 * p * math.log(5), rel=1e-4)
    # QFL: 20 anchors x 2 classes; the positive (anchor, class 1) pair aims at the IoU
    negative = -math.log(1 - p) * p ** 2
    positive = -(iou * math.log(p) + (1 - iou) * math.log(1 - p)) * (iou - p) ** 2
    assert losses['loss_cls'].item() == pytest.approx(39 * negative + positive, rel=1e-4)


def test_dfl_targets_are_clamped_below_reg_max():
    """One level, so ATSS's 3 candidates tie and all are positive; the GT box reaches about
    9 strides from them, beyond reg_max 4: the targets clamp to 3.9 and DFL (ln 5 per side
    for the uniform distributions of zero weights, weight 0.01 each) trains them."""
    head = build_head(strides=(8,), octave_base_scale=2, topk=3, reg_max=4)
    for layer in (head.gfl_cls, head.gfl_reg):
        torch.nn.init.zeros_(layer.weight)
    losses, positives = head.loss(pyramid_for(160, (8,), batch=1),
                                  [make_sample([[0.0, 0.0, 150.0, 150.0]], [0], size=160)])
    assert positives.bbox_weights.sum() == 3
    assert losses['loss_dfl'].item() == pytest.approx(0.25 * 3 * 0.01 * math.log(5), rel=1e-4)


def test_loss_gradients_and_positives():
    head = build_head()
    pyramid = pyramid_for(64, (8, 16, 32))
    samples = [make_sample([[4, 6, 40, 50], [30, 20, 60, 36]], [0, 1]),
               make_sample([[10, 10, 30, 28]], [1])]
    losses, positives = head.loss(pyramid, samples)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_dfl'}
    assert all(v.dim() == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    params = dict(head.named_parameters())
    assert [n for n, p in params.items() if p.grad is None] == []
    # a level's Scale only moves through its own positives' boxes
    assert [n for n, p in params.items() if not p.grad.any() and 'scales' not in n] == []

    num_pos = (positives.bbox_weights > 0).sum(1)
    m = min(max(int(num_pos.max()), 9), 300)
    assert positives.coords.shape == (2, m, 4) and positives.targets.shape == (2, m, 4)
    assert positives.labels.shape == (2, m) and positives.feats.shape == (2, m, WIDTH)
    pos = positives.bbox_weights > 0
    assert (positives.labels[pos] < NUM_CLASSES).all()
    assert (positives.labels[~pos] == NUM_CLASSES).all() and (positives.label_weights == 1).all()
    for i, sample in enumerate(samples):  # positives carry their GT box; every GT has some
        hits = (positives.targets[i][pos[i]][:, None] == sample.gt_instances.bboxes[None]).all(-1)
        assert hits.any(-1).all() and hits.any(0).all()
    # the coords are the anchors, with the pyramid feature at each
    anchors = torch.cat(head.prior_generator.grid_priors([(8, 8), (4, 4), (2, 2)]))
    flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pyramid], 1)
    idx = (positives.coords[0][:, None] == anchors[None]).all(-1).float().argmax(1)
    assert torch.equal(positives.coords[0], anchors[idx])
    assert torch.equal(positives.feats[0], flat[0][idx])
    ious = bbox_overlaps(positives.coords[0][pos[0]], positives.targets[0][pos[0]],
                         is_aligned=True)
    assert (ious > 0).all()


def test_image_without_boxes_trains_background_only():
    head = build_head()
    losses, positives = head.loss(pyramid_for(64, (8, 16, 32), batch=1), [make_sample([], [])])
    assert losses['loss_cls'] > 0
    assert losses['loss_bbox'] == 0 and losses['loss_dfl'] == 0
    sum(losses.values()).backward()  # the zero losses still reach the box branch
    assert head.gfl_reg.weight.grad is not None
    assert positives.coords.shape == (1, 9, 4) and (positives.labels == NUM_CLASSES).all()


def test_predict_caps_detections_and_rescales():
    head = build_head(test_cfg=dict(score_thr=0.0, max_per_img=5, nms_pre=50))
    torch.nn.init.normal_(head.gfl_reg.weight, std=0.3)  # boxes of different sizes
    pyramid = pyramid_for(64, (8, 16, 32), batch=1)
    with torch.no_grad():
        plain = head.predict(pyramid, [make_sample([], [])], rescale=False)[0]
        rescaled = head.predict(pyramid, [make_sample([], [], scale=0.5)], rescale=True)[0]
    assert len(plain) == 5 and plain.bboxes.shape == (5, 4)
    assert (plain.scores[:-1] >= plain.scores[1:]).all()
    assert (plain.bboxes >= 0).all() and (plain.bboxes <= 64).all()  # clipped to img_shape
    torch.testing.assert_close(rescaled.bboxes, plain.bboxes * 2)


# ------------------------------------------------------------------ inside Co-DINO
@pytest.fixture(scope='module')
def quickstart_model():
    cfg = Config.fromfile(str(QUICKSTART))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_co_dino_k1_step_reaches_every_parameter(quickstart_model):
    """The quick-start Co-DINO with the GFL head alone: one training step on two 64 px
    images; every parameter gets a finite gradient, the collaborative ones a non-zero one."""
    model = quickstart_model
    assert list(model.aux_heads) == ['gfl'] and isinstance(model.aux_heads['gfl'], CoGFLHead)
    model.train()
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
              for _ in range(2)]
    samples = [make_sample([[4, 6, 40, 50], [30, 20, 60, 36]], [0, 5]),
               make_sample([[10, 10, 30, 28]], [7])]
    for sample in samples:
        sample.set_metainfo(dict(ori_shape=(64, 64)))
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    assert {'gfl.loss_cls', 'gfl.loss_bbox', 'gfl.loss_dfl', 'gfl.pos.loss_cls'} <= set(losses)
    total, _ = model.parse_losses(losses)
    model.zero_grad()
    total.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'parameters without a finite gradient: {missing}'
    collaborative = ('aux_heads.', 'adapter.', 'query_head.pos_query_generators.')
    zero = [n for n, p in model.named_parameters()
            if n.startswith(collaborative) and not p.grad.any() and 'scales' not in n]
    assert not zero, f'collaborative parameters with a zero gradient: {zero}'


def test_r50_config_builds_with_official_gfl_settings():
    cfg = Config.fromfile(str(CONFIG))
    assert cfg.custom_imports.imports == ['projects.gfl_aux_head']
    model = MODELS.build(cfg.model)
    head = model.aux_heads['gfl']
    assert list(model.aux_heads) == ['gfl'] and head.eval_kind == 'one-stage'
    assert head.num_classes == model.query_head.num_classes == 80
    assert head.reg_max == 16 and head.gfl_reg.out_channels == 4 * 17
    assert len(head.cls_convs) == 1 and head.prior_generator.num_levels == 6
    assert (head.loss_cls.loss_weight, head.loss_dfl.loss_weight,
            head.loss_bbox.loss_weight) == (1.0, 0.25, 2.0)
    assert head.assigner.topk == 9 and model.lambda_2 == 2.0


@pytest.mark.slow  # two fresh Python processes: ~6 s of CPU each; the fast check of the
# same sys.path rule is tests/tools/test_train_test_tools.py::test_plugins_import_from_the_...
def test_tools_load_the_plugin_from_the_repository_root(tmp_path: Path):
    """``python tools/train.py / tools/test.py CONFIG`` from the root, with codetr importable
    but the root not on PYTHONPATH (as after ``pip install codetr``): the custom import works.
    The extra flags stop each tool right after it read the config, before a Runner exists."""
    (tmp_path / 'codetr').symlink_to(ROOT / 'codetr')
    env = {**os.environ, 'PYTHONPATH': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    commands = [
        ['tools/train.py', str(QUICKSTART), '--amp',
         '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper2'],
        ['tools/test.py', str(QUICKSTART), 'missing.pth', '--out', 'preds.txt']]
    runs = [subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for cmd in commands]
    outputs = [run.communicate(timeout=120)[1] for run in runs]
    assert 'Failed to import custom modules' not in outputs[0] + outputs[1]
    assert '--amp replaces OptimWrapper, but the config uses AmpOptimWrapper2' in outputs[0]
    assert '--out preds.txt must end with one of' in outputs[1]
