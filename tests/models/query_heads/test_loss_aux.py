"""loss_aux of both query heads: the positive-query branch with fixed targets."""
from __future__ import annotations

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.co_modules import AuxPositives
from codetr.registry import MODELS
from codetr.structures import DetDataSample, bbox_overlaps

from .test_co_deform_detr_head import _head as tiny_deform_head

C, NUM_CLASSES, NUM_LAYERS = 32, 4, 2
BATCH_SHAPE = (64, 64)
IMG_SHAPES = [(64, 64), (48, 56)]
# Per image 3 positive queries; the third of the second image is padding (bbox weight 0).
COORDS = torch.tensor([[[8., 8., 24., 30.], [30., 4., 60., 40.], [0., 32., 20., 60.]],
                       [[4., 6., 20., 22.], [16., 10., 40., 44.], [28., 20., 50., 40.]]])
TARGETS = torch.tensor([[[10., 6., 26., 28.], [32., 8., 58., 44.], [2., 30., 22., 62.]],
                        [[6., 4., 22., 20.], [18., 12., 36., 40.], [0., 0., 0., 0.]]])
LABELS = torch.tensor([[1, 3, 0], [2, 1, NUM_CLASSES]])
BBOX_WEIGHTS = torch.tensor([[1., 1., 1.], [1., 1., 0.]])
NUM_POS = 5


def _positives(**changes) -> AuxPositives:
    fields = dict(coords=COORDS.clone(), labels=LABELS.clone(), targets=TARGETS.clone(),
                  label_weights=torch.ones(2, 3), bbox_weights=BBOX_WEIGHTS.clone(),
                  feats=torch.randn(2, 3, C, generator=torch.Generator().manual_seed(1)))
    fields.update(changes)
    return AuxPositives(**fields)


def _samples() -> list[DetDataSample]:
    samples = []
    for h, w in IMG_SHAPES:
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), batch_input_shape=BATCH_SHAPE))
        sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                           labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    return samples


def _memory(sizes=((8, 8), (4, 4))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(2, C, h, w, generator=g).requires_grad_() for h, w in sizes]


def tiny_dino_head(aux_head_names=('rcnn', 'atss')):
    attn = dict(embed_dims=C, num_heads=2, num_levels=2, num_points=2, dropout=0.0)
    ffn = dict(embed_dims=C, feedforward_channels=64, ffn_drop=0.0)
    torch.manual_seed(0)
    head = MODELS.build(dict(
        type='CoDINOHead', num_classes=NUM_CLASSES, embed_dims=C, num_queries=10,
        aux_head_names=aux_head_names,
        transformer=dict(
            type='CoDinoTransformer', num_feature_levels=2,
            encoder=dict(type='DeformableDetrTransformerEncoder', num_layers=1,
                         layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
            decoder=dict(type='DinoTransformerDecoder', num_layers=NUM_LAYERS, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=C, num_heads=2, dropout=0.0),
                cross_attn_cfg=attn, ffn_cfg=ffn))),
        positional_encoding=dict(num_feats=C // 2, temperature=20, normalize=True)))
    head.init_weights()
    return head


@pytest.fixture(scope='module')
def dino_head():
    return tiny_dino_head()


def _box_losses_by_hand(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """With zero-initialised last box layers every layer predicts its reference: the box
    itself, so L1 (x5) and GIoU (x2) follow from the coords and targets alone."""
    factors = torch.tensor([[w, h, w, h] for h, w in IMG_SHAPES], dtype=torch.float)[:, None]
    weight = BBOX_WEIGHTS[..., None]
    def to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:  # written out, not the library's
        return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2,
                          boxes[..., 2:] - boxes[..., :2]], -1)

    l1 = (to_cxcywh(coords / factors) - to_cxcywh(TARGETS / factors)).abs() * weight
    giou = bbox_overlaps(coords.reshape(-1, 4), TARGETS.reshape(-1, 4), mode='giou',
                         is_aligned=True)
    return 5 * l1.sum() / NUM_POS, 2 * ((1 - giou) * BBOX_WEIGHTS.reshape(-1)).sum() / NUM_POS


def test_dino_keys_for_every_layer_and_hand_computed_box_losses(dino_head):
    losses = dino_head.loss_aux(_memory(), _positives(), _samples(), 'atss')
    assert sorted(losses) == sorted(f'{p}loss_{n}' for p in ('', 'd0.')
                                    for n in ('cls', 'bbox', 'iou'))
    assert all(torch.isfinite(v) for v in losses.values())
    l1, giou = _box_losses_by_hand(COORDS)
    for prefix in ('', 'd0.'):
        torch.testing.assert_close(losses[f'{prefix}loss_bbox'], l1)
        torch.testing.assert_close(losses[f'{prefix}loss_iou'], giou)
    assert losses['loss_cls'] > 0


def test_dino_moving_a_positive_changes_box_loss_padding_targets_do_not(dino_head):
    base = dino_head.loss_aux(_memory(), _positives(), _samples(), 'atss')
    moved = COORDS.clone()
    moved[0, 0] += torch.tensor([6., 0., 6., 0.])
    losses = dino_head.loss_aux(_memory(), _positives(coords=moved), _samples(), 'atss')
    assert not torch.allclose(losses['loss_bbox'], base['loss_bbox'])
    torch.testing.assert_close(losses['loss_bbox'], _box_losses_by_hand(moved)[0])
    targets = TARGETS.clone()
    targets[1, 2] = torch.tensor([5., 5., 50., 50.])  # the padding entry's (unused) target
    padded = dino_head.loss_aux(_memory(), _positives(targets=targets), _samples(), 'atss')
    for key in base:
        torch.testing.assert_close(padded[key], base[key])


def test_dino_gradients_reach_generator_decoder_and_shared_branches():
    dino_head = tiny_dino_head()
    for branch in dino_head.reg_branches:  # zero last layers would block the earlier ones
        torch.nn.init.normal_(branch[-1].weight, std=0.01)
    memory = _memory()
    losses = dino_head.loss_aux(memory, _positives(), _samples(), 'rcnn')
    sum(losses.values()).backward()
    got = {n for n, p in dino_head.named_parameters() if p.grad is not None
           and p.grad.abs().sum() > 0}
    must = [n for n, _ in dino_head.named_parameters()
            if n.startswith(('pos_query_generators.rcnn.', 'transformer.decoder.'))
            or n.startswith(tuple(f'{b}_branches.{i}.' for b in ('cls', 'reg')
                                  for i in range(NUM_LAYERS)))]
    assert not set(must) - got, sorted(set(must) - got)
    # Nothing upstream of the decoder and no other head's generator takes part.
    assert not {n for n in got if n.startswith(('transformer.encoder', 'transformer.enc_',
                                                'pos_query_generators.atss', 'dn_generator'))}
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in memory)


def test_unknown_head_name_lists_the_known_ones(dino_head):
    with pytest.raises(KeyError, match=r"'fcos'.*\['rcnn', 'atss'\]"):
        dino_head.loss_aux(_memory(), _positives(), _samples(), 'fcos')


def test_dino_encode_memory_gives_the_levels_of_loss(dino_head):
    feats = [m.detach() for m in _memory()]
    memory = dino_head.encode_memory(feats, _samples())
    assert [tuple(m.shape) for m in memory] == [(2, C, 8, 8), (2, C, 4, 4)]
    enc = dino_head.encode(feats, _samples())
    torch.testing.assert_close(memory[1].flatten(2).transpose(1, 2), enc.memory[:, 64:])


def test_deformable_head_loss_aux_uses_features_and_trains_its_generator():
    head = tiny_deform_head(aux_head_names=('rcnn',))
    gen = head.pos_query_generators['rcnn']
    assert gen.mode == 'deformable' and gen.with_coord_feat  # official default
    memory = _memory(((8, 8), (4, 4)))
    labels = torch.tensor([[1, 2, 0], [2, 1, 3]])  # this head has 3 classes: background 3
    losses = head.loss_aux(memory, _positives(labels=labels), _samples(), 'rcnn')
    assert sorted(losses) == sorted(f'{p}loss_{n}' for p in ('', 'd0.')
                                    for n in ('cls', 'bbox', 'iou'))
    sum(losses.values()).backward()
    for name, param in gen.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name in ('cls_branches.0.weight', 'reg_branches.1.4.weight'):
        assert head.get_parameter(name).grad.abs().sum() > 0, name
    l1, giou = _box_losses_by_hand(COORDS)  # zero last box layers here too
    torch.testing.assert_close(losses['d0.loss_bbox'], l1)
    torch.testing.assert_close(losses['loss_iou'], giou)
    with pytest.raises(ValueError, match='returned no feats'):
        head.loss_aux(memory, _positives(labels=labels, feats=None), _samples(), 'rcnn')


def _value_proj_calls(head) -> list[int]:
    """A counter of value projections in the decoder (one entry per call)."""
    calls: list[int] = []
    for layer in head.transformer.decoder.layers:
        layer.attentions[1].value_proj.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize('kind', ['dino', 'deformable'])
def test_positive_passes_reuse_the_main_pass_memory_and_value_projections(kind):
    """``loss`` returns EncodedLevels: the aux passes decode against the same flattened
    memory and reuse each layer's value projection. Losses and gradients equal those of
    passes that flatten and project plain maps afresh."""
    from .test_co_deform_detr_head import _samples as samples_with_gt
    labels = torch.tensor([[1, 2, 0], [2, 1, 3]])  # valid for both heads' class counts
    results = []
    for shared in (True, False):
        if kind == 'dino':
            head = tiny_dino_head(aux_head_names=('rcnn',))
        else:
            head = tiny_deform_head(aux_head_names=('rcnn',))
        calls = _value_proj_calls(head)
        feats = [m.detach().requires_grad_() for m in _memory(((8, 10), (4, 5)))]
        losses, memory = head.loss(feats, samples_with_gt())
        assert len(calls) == NUM_LAYERS and len(memory) == 2
        if not shared:
            memory = list(memory)  # plain maps: flattened and projected again
        aux = head.loss_aux(memory, _positives(labels=labels), samples_with_gt(), 'rcnn')
        assert len(calls) == NUM_LAYERS * (1 if shared else 2)
        total = sum(losses.values()) + sum(aux.values())
        total.backward()
        grads = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
        results.append((aux, grads, [f.grad.clone() for f in feats]))
    (aux_a, grads_a, feat_a), (aux_b, grads_b, feat_b) = results
    assert aux_a.keys() == aux_b.keys()
    for key in aux_a:
        torch.testing.assert_close(aux_a[key], aux_b[key], rtol=1e-6, atol=1e-7, msg=key)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)
    for a, b in zip(feat_a, feat_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
