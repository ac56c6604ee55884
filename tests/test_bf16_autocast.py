"""bfloat16 autocast (``tools/train.py --amp`` on a CPU) for every Co-DETR model.

Tiny versions of Co-DINO K=2 (Faster R-CNN + ATSS), K=1 RetinaNet, K=1 FCOS and
Co-Deformable-DETR K=2 run one training step and one prediction under
``torch.autocast('cpu', dtype=torch.bfloat16)`` and in float32 on the same weights and batch.
The network layers run in bfloat16; priors, targets, matching, losses and post-processing must
stay float32 (``codetr.models.utils.precision``).
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData

from codetr.models.utils import at_least_float32, autocast_disabled, float32_inputs, to_float32
from codetr.registry import MODELS
from codetr.structures import DetDataSample

ROOT = Path(__file__).resolve().parents[1]
CO_DINO_K2 = ROOT / 'configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py'
CO_DEFORMABLE_DETR = ROOT / 'configs/co_deformable_detr/co_deformable_detr_r50_8xb2_1x_coco.py'
NUM_CLASSES = 8
EMBED = 64
IMG_SIZE = 96
BF16 = torch.bfloat16

# Measured |bf16 total - fp32 total| / fp32 total on these models for three batches (seeds
# 0-2): 0.003 % .. 0.63 %, the largest from Faster R-CNN, whose proposals rank differently and
# so sample other RoIs, and from Hungarian matches flipped by near-tie costs. 2 % leaves room
# for other batches; a loss computed in bf16 or anchors rounded by pixels would not stay in it.
TOTAL_LOSS_RTOL = 0.02
# Cosine of the bf16 and fp32 gradients (all parameters), measured 0.92 .. 0.9997 (lowest for
# RetinaNet, where flipped matches of the near-tied random-init queries move the class loss).
GRAD_COSINE_MIN = 0.85
# The fp32 top-10 detections found again among the bf16 ones (same label): measured worst
# 0.12 px and 0.0016 in score on 96 px inputs (scores 0.01 .. 0.44).
BOX_ATOL_PX = 0.3
SCORE_ATOL = 0.005


# ------------------------------------------------------------------------- models
def _co_dino(aux_heads: dict | None = None, train_cfg: dict | None = None) -> dict:
    """The K=2 quick-start Co-DINO (R18, width 64, 1 + 2 layers, 30 queries); ``aux_heads``
    and ``train_cfg`` replace its own when given."""
    model = copy.deepcopy(Config.fromfile(str(CO_DINO_K2)).model.to_dict())
    if aux_heads is not None:
        model['aux_heads'] = aux_heads
        model['train_cfg'] = dict(query_head=model['train_cfg']['query_head'],
                                  **(train_cfg or {}))
        model['test_cfg'] = dict(query_head=model['test_cfg']['query_head'])
    return model


def _retina() -> dict:
    return _co_dino(aux_heads=dict(retina=dict(
        type='CoRetinaHead', num_classes=NUM_CLASSES, in_channels=EMBED, feat_channels=EMBED,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64]))))


def _fcos() -> dict:
    return _co_dino(aux_heads=dict(fcos=dict(
        type='CoFCOSHead', num_classes=NUM_CLASSES, in_channels=EMBED, feat_channels=EMBED,
        strides=[8, 16, 32, 64], norm_cfg=dict(type='GN', num_groups=16))),
        train_cfg=dict(fcos=dict()))


def _co_deformable_detr() -> dict:
    """Co-Deformable-DETR K=2 (rcnn + atss) at the quick-start scale: R18 C3..C5 + one neck
    level (strides 8..64, as the R50 config), width 64, 1 + 2 layers, 30 queries."""
    model = copy.deepcopy(Config.fromfile(str(CO_DEFORMABLE_DETR)).model.to_dict())
    attn = dict(embed_dims=EMBED, num_heads=4, num_levels=4, num_points=2, dropout=0.0)
    ffn = dict(embed_dims=EMBED, feedforward_channels=128, ffn_drop=0.0)
    model['backbone'].update(depth=18, out_indices=(1, 2, 3), frozen_stages=-1, init_cfg=None)
    model['neck'].update(in_channels=[128, 256, 512], out_channels=EMBED,
                         norm_cfg=dict(type='GN', num_groups=16), num_outs=4)
    model['num_classes'] = NUM_CLASSES
    head = model['query_head']
    head.update(num_queries=30,
                positional_encoding=dict(num_feats=EMBED // 2, normalize=True, offset=-0.5))
    head['transformer']['encoder'].update(num_layers=1, layer_cfg=dict(self_attn_cfg=attn,
                                                                       ffn_cfg=ffn))
    head['transformer']['decoder'].update(num_layers=2, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=EMBED, num_heads=4, dropout=0.0), cross_attn_cfg=attn,
        ffn_cfg=ffn))
    model['adapter'].update(in_channels=EMBED, norm_cfg=dict(type='GN', num_groups=16))
    rcnn, atss = model['aux_heads']['rcnn'], model['aux_heads']['atss']
    rcnn['rpn'].update(in_channels=EMBED, feat_channels=EMBED)
    rcnn['rpn']['anchor_generator'].update(octave_base_scale=2)
    rcnn['roi']['bbox_roi_extractor'].update(out_channels=EMBED, finest_scale=28)
    rcnn['roi']['bbox_head'].update(in_channels=EMBED, fc_out_channels=64)
    atss.update(in_channels=EMBED, feat_channels=EMBED,
                norm_cfg=dict(type='GN', num_groups=16))
    atss['anchor_generator'].update(octave_base_scale=4)
    model['train_cfg']['rcnn']['rpn_proposal'].update(nms_pre=1000, max_per_img=300)
    model['train_cfg']['rcnn']['rcnn']['sampler'].update(num=128)
    return model


MODEL_CFGS = dict(co_dino_k2_rcnn_atss=_co_dino, co_dino_k1_retina=_retina,
                  co_dino_k1_fcos=_fcos, co_deformable_detr_k2=_co_deformable_detr)


def build(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def make_batch(num_classes: int = NUM_CLASSES, seed: int = 0) -> dict:
    """Two uint8 images of ``IMG_SIZE`` px with 3 boxes each (8 px .. half the image)."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(2):
        inputs.append(torch.randint(0, 256, (3, IMG_SIZE, IMG_SIZE), generator=g,
                                    dtype=torch.uint8))
        xy = torch.rand(3, 2, generator=g) * IMG_SIZE / 2
        wh = 8 + torch.rand(3, 2, generator=g) * (IMG_SIZE / 2 - 8)
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_shape=(IMG_SIZE, IMG_SIZE), ori_shape=(IMG_SIZE, IMG_SIZE),
            scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1).clamp(max=IMG_SIZE),
            labels=torch.randint(0, num_classes, (3,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# -------------------------------------------------------------------------- spies
def _spy(obj, name: str, record: list) -> None:
    """Record every return value of ``obj.name`` (an instance attribute shadows the method)."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        record.append(out)
        return out

    setattr(obj, name, wrapper)


def _install_spies(model) -> dict[str, list]:
    """Record the aux heads' raw outputs, priors / points, and the positives they hand on."""
    records: dict[str, list] = dict(raw=[], priors=[], positives=[])
    for head in model.aux_heads.values():
        if hasattr(head, 'rpn_head'):
            _spy(head.rpn_head, 'forward', records['raw'])
            _spy(head.rpn_head.prior_generator, 'grid_priors', records['priors'])
        elif hasattr(head, 'prior_generator'):
            _spy(head, 'forward', records['raw'])
            _spy(head.prior_generator, 'grid_priors', records['priors'])
        else:  # FCOS: points instead of anchors
            _spy(head, 'forward', records['raw'])
            _spy(head, '_points', records['priors'])
    original = model.query_head.loss_aux

    def loss_aux(memory, positives, data_samples, head_name):
        records['positives'].append(positives)
        return original(memory, positives, data_samples, head_name)

    model.query_head.loss_aux = loss_aux
    return records


def _train_step(model, data: dict, autocast: bool) -> tuple[dict, torch.Tensor, dict]:
    """Seeded loss + backward: (loss values, total, gradients)."""
    model.train()
    model.zero_grad()
    torch.manual_seed(3)  # denoising noise, positive and RoI subsampling
    with torch.autocast('cpu', dtype=BF16, enabled=autocast):
        losses = model(**copy.deepcopy(data), mode='loss')
    total, _ = model.parse_losses(losses)
    total.backward()
    grads = {n: None if p.grad is None else p.grad.clone()
             for n, p in model.named_parameters() if p.requires_grad}
    return losses, total.detach(), grads


def _predict(model, raw: dict, autocast: bool) -> list[InstanceData]:
    model.eval()
    data = model.data_preprocessor(copy.deepcopy(raw), training=False)
    with torch.no_grad(), torch.autocast('cpu', dtype=BF16, enabled=autocast):
        return [s.pred_instances for s in model(**data, mode='predict')]


@pytest.fixture(scope='module', params=list(MODEL_CFGS))
def runs(request) -> dict:
    """One model, one batch: float32 and bf16 training steps."""
    torch.set_num_threads(1)
    model = build(MODEL_CFGS[request.param]())
    data = model.data_preprocessor(make_batch(), training=True)
    fp32 = _train_step(model, data, autocast=False)
    records = _install_spies(model)
    bf16 = _train_step(model, data, autocast=True)
    return dict(name=request.param, model=model, fp32=fp32, bf16=bf16, records=records)


def _ranking_free(cfg: dict) -> torch.nn.Module:
    """The model of ``cfg`` made to predict the same detections whatever the proposal ranking.

    The two-stage top-k pairs the k-th best proposal with the k-th learned content query, and
    a random-init model's proposal scores are near ties that bf16 rounding reorders: fp32 and
    bf16 would then decode different (query, box) pairs. With every encoder position selected
    (``num_queries`` = positions) and one shared content query the decoder sees the same set
    of queries in both; non-zero last box layers make the boxes depend on the network.
    """
    probe = build(cfg).eval()
    data = probe.data_preprocessor(make_batch(), training=False)
    with torch.no_grad():
        positions = sum(f.shape[-2] * f.shape[-1] for f in probe.extract_feat(data['inputs']))
    cfg = copy.deepcopy(cfg)
    cfg['query_head']['num_queries'] = positions
    cfg['test_cfg']['query_head'] = dict(max_per_img=positions * NUM_CLASSES, nms=None)
    model = build(cfg).eval()
    head = model.query_head
    content = getattr(head, 'query_embedding', None) or head.transformer.query_embed
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        content.weight.copy_(content.weight[:1].expand_as(content.weight))
        for branch in head.reg_branches:
            branch[-1].weight.copy_(torch.randn(branch[-1].weight.shape, generator=gen) * 0.05)
    return model


@pytest.fixture(scope='module', params=list(MODEL_CFGS))
def predictions(request) -> dict:
    """float32 and bf16 predictions of a ranking-free model (:func:`_ranking_free`)."""
    torch.set_num_threads(1)
    model = _ranking_free(MODEL_CFGS[request.param]())
    raw = make_batch()
    return dict(name=request.param, model=model, raw=raw,
                pred32=_predict(model, raw, autocast=False),
                pred16=_predict(model, raw, autocast=True))


# -------------------------------------------------------------------------- tests
def test_every_bf16_loss_is_finite_and_the_total_is_close_to_float32(runs):
    losses32, total32, _ = runs['fp32']
    losses16, total16, _ = runs['bf16']
    assert set(losses16) == set(losses32)
    aux_names = list(runs['model'].aux_heads)
    assert any(key.startswith(f'{aux_names[0]}.pos.') for key in losses16)
    for key, value in losses16.items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value).all(), key
    rel = abs(float(total16) - float(total32)) / float(total32)
    assert rel < TOTAL_LOSS_RTOL, f'{runs["name"]}: bf16 total {float(total16):.4f} vs fp32 ' \
                                  f'{float(total32):.4f} ({rel:.2%})'


def test_every_parameter_gets_a_finite_bf16_gradient_pointing_as_in_float32(runs):
    _, _, grads32 = runs['fp32']
    _, _, grads16 = runs['bf16']
    bad = [n for n, g in grads16.items() if g is None or not torch.isfinite(g).all()]
    assert not bad, f'parameters without a finite bf16 gradient: {bad[:5]}'
    assert all(g.dtype == torch.float32 for g in grads16.values())
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[n].flatten() for n in grads32])
    cosine = torch.nn.functional.cosine_similarity(flat32, flat16, dim=0)
    assert cosine > GRAD_COSINE_MIN, f'{runs["name"]}: gradient cosine {float(cosine):.4f}'


def test_aux_heads_run_in_bf16_but_priors_and_positives_are_float32(runs):
    records = runs['records']
    raw_dtypes = {t.dtype for out in records['raw'] for t in out[0]}
    assert raw_dtypes == {BF16}, 'the aux heads did not run under autocast'
    assert records['priors']
    for out in records['priors']:
        tensors = out if isinstance(out, list) else [out[0]]  # anchors / FCOS points
        assert all(t.dtype == torch.float32 for t in tensors)
    assert len(records['positives']) == len(runs['model'].aux_heads)
    for positives in records['positives']:
        assert positives.coords.dtype == torch.float32
        assert positives.targets.dtype == torch.float32
        assert positives.label_weights.dtype == torch.float32


def _nearest(box: torch.Tensor, label: int, pred: InstanceData) -> tuple[float, float]:
    """Largest coordinate difference (px) to the closest same-label box of ``pred``, and the
    score difference of that detection; ``box`` is ``(5,)`` xyxy + score."""
    same = pred.labels == label
    diffs = (pred.bboxes[same] - box[:4]).abs().max(1).values
    best = int(diffs.argmin())
    return float(diffs[best]), abs(float(pred.scores[same][best]) - float(box[4]))


def _assert_close_detections(pred32: list[InstanceData], pred16: list[InstanceData],
                             name: str) -> None:
    """bf16 detections are float32 and hold each of the fp32 top 10 (same label)."""
    for p32, p16 in zip(pred32, pred16):
        assert p16.bboxes.dtype == p16.scores.dtype == torch.float32
        assert len(p16) > 0 and torch.isfinite(p16.bboxes).all()
        for i in p32.scores.argsort(descending=True)[:10].tolist():
            box = torch.cat([p32.bboxes[i], p32.scores[i:i + 1]])
            box_err, score_err = _nearest(box, int(p32.labels[i]), p16)
            assert box_err < BOX_ATOL_PX, f'{name}: box off by {box_err:.3f} px'
            assert score_err < SCORE_ATOL, f'{name}: score off by {score_err:.4f}'


def test_bf16_prediction_is_float32_and_matches_the_float32_one(predictions):
    assert len(predictions['pred16'][0]) == len(predictions['pred32'][0])
    _assert_close_detections(predictions['pred32'], predictions['pred16'], predictions['name'])


def test_bf16_aux_head_predictions_are_float32_and_match(predictions):
    model = predictions['model']
    for name, head in model.aux_heads.items():
        if head.eval_kind == 'one-stage':
            # every anchor / point, no NMS: near-tie scores must not pick other survivors
            head.test_cfg.update(score_thr=0.0, nms=None, max_per_img=100000)
        else:  # the same for the proposals and the RoI detections
            head.test_cfg['rpn'].update(nms=None)
            head.test_cfg['rcnn'].update(nms=None, max_per_img=100000)
        model.eval_head = name  # what test_cfg.eval_module selects
        pred32 = _predict(model, predictions['raw'], autocast=False)
        pred16 = _predict(model, predictions['raw'], autocast=True)
        _assert_close_detections(pred32, pred16, f'{predictions["name"]}/{name}')
    model.eval_head = None


# ----------------------------------------------------------------- optim wrapper
def test_bfloat16_optim_wrapper_trains_two_steps():
    torch.set_num_threads(1)
    model = build(_fcos())
    wrapper = build_optim_wrapper(model, dict(
        type='BFloat16OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
        clip_grad=dict(max_norm=0.1)))
    data = model.data_preprocessor(make_batch(), training=True)
    watched = dict(backbone=model.backbone.conv1.weight,
                   fcos=model.aux_heads['fcos'].conv_cls.weight,
                   query_head=model.query_head.cls_branches[0].weight)
    before = {k: p.detach().clone() for k, p in watched.items()}
    model.train()
    for _ in range(2):
        with wrapper.optim_context(model):
            assert torch.is_autocast_enabled('cpu')
            assert torch.get_autocast_dtype('cpu') == BF16
            losses = model(**copy.deepcopy(data), mode='loss')
        total, _ = model.parse_losses(losses)
        assert torch.isfinite(total)
        wrapper.update_params(total)
    for key, param in watched.items():
        assert param.dtype == torch.float32
        assert not torch.equal(before[key], param.detach()), f'{key} did not change'


# ------------------------------------------------------------------ the helpers
def test_to_float32_casts_only_half_precision_and_keeps_structure():
    half, full, double = torch.ones(2, dtype=BF16), torch.ones(2), torch.ones(2).double()
    ints = torch.ones(2, dtype=torch.long)
    out = to_float32(dict(a=[half, (full, ints)], b=double, c='text'))
    assert out['a'][0].dtype == torch.float32
    assert out['a'][1][0] is full and out['a'][1][1] is ints and out['b'] is double
    assert isinstance(out['a'][1], tuple) and out['c'] == 'text'
    assert at_least_float32(torch.float16) == torch.float32
    assert at_least_float32(torch.float64) == torch.float64


def test_float32_inputs_turns_autocast_off_inside():
    @float32_inputs
    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b  # a matmul autocast would run in bf16

    a = torch.randn(4, 4)
    with torch.autocast('cpu', dtype=BF16):
        assert (a @ a).dtype == BF16
        assert product(a.to(BF16), a).dtype == torch.float32
        with autocast_disabled(a):
            assert (a @ a).dtype == torch.float32
        assert torch.is_autocast_enabled('cpu')
