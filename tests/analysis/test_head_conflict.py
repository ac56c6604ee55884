"""Branch agreement on the encoder: cosine, Grad-CAM and KL on hand-made numbers, and two
identical aux heads of a from-scratch quick-start Co-DINO (cosine 1, CAM distance 0)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mmengine.config import Config

from codetr.analysis import head_conflict as hc
from codetr.analysis.model_inputs import build_model, iter_images, preprocess

from .tiny_setup import write_tiny_config


def test_branches_group_the_loss_keys():
    losses = {'loss_cls': torch.tensor(1.), 'd0.loss_iou': torch.tensor(2.),
              'enc_loss_bbox': torch.tensor(3.), 'atss.loss_cls': torch.tensor(4.),
              'atss.pos.d0.loss_cls': [torch.tensor(5.), torch.tensor(6.)],
              'rcnn.loss_bbox': torch.tensor(7.), 'atss.acc': torch.tensor(100.)}
    sums = hc.branch_losses(losses, ('rcnn', 'atss'))
    assert list(sums) == ['detr', 'rcnn', 'atss', 'atss.pos']
    assert [float(v) for v in sums.values()] == [6.0, 7.0, 4.0, 11.0]


def test_cosine_matrix():
    a = torch.tensor([1., 2., 0.])
    b = torch.tensor([-2., 1., 5.])  # orthogonal to a
    cos = hc.cosine_matrix([a, 2 * a, -a, b, torch.zeros(3)])
    expected = torch.tensor([[1., 1., -1., 0., 0.], [1., 1., -1., 0., 0.],
                             [-1., -1., 1., 0., 0.], [0., 0., 0., 1., 0.], [0.] * 5],
                            dtype=torch.float64)
    assert torch.allclose(cos, expected)


def test_grad_cam_weights_channels_by_their_mean_gradient():
    feature = torch.tensor([[[1., 2.]], [[3., 0.]]])  # (C=2, h=1, w=2)
    grad = torch.tensor([[[2., 0.]], [[-1., -1.]]])  # channel means 1 and -1
    assert torch.equal(hc.grad_cam(feature, grad), torch.tensor([[0., 2.]]))  # relu([-2, 2])


def test_kl_matrix_and_head_distances():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    kl = hc.kl_matrix([p, q, p])
    pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert torch.allclose(kl, torch.tensor([[0, pq, 0], [qp, 0, qp], [0, pq, 0]],
                                           dtype=torch.float64))
    distances = hc.head_distances(np.array([[0., 1., 2.], [3., 0., 4.], [5., 6., 0.]]))
    assert distances.tolist() == [2.75, 3.5, 4.25]  # mean over j of (S_ij + S_ji) / 2


def test_cam_distribution_sums_levels_and_stays_finite():
    fine, coarse = torch.tensor([[0., 2.], [0., 0.]]), torch.tensor([[1.]])
    p = hc.cam_distribution([fine, coarse], (2, 2))  # [[1, 3], [1, 1]] / 6
    mix = hc.UNIFORM_MIX
    assert torch.allclose(p, (1 - mix) * torch.tensor([1., 3., 1., 1.], dtype=torch.float64) / 6
                          + mix / 4)
    assert torch.allclose(hc.cam_distribution([torch.zeros(2, 2)], (2, 2)),
                          torch.full((4,), 0.25, dtype=torch.float64))


@pytest.fixture(scope='module')
def twin_heads(tmp_path_factory):
    """The quick-start model with two identical ATSS heads ``a`` and ``b``."""
    root = tmp_path_factory.mktemp('conflict')
    atss = '{{_base_.model.aux_heads.atss}}'
    cfg = Config.fromfile(write_tiny_config(
        root, 1, aux_heads=f'dict(_delete_=True, a={atss}, b={atss})'))
    cfg.model.train_cfg = dict(query_head=cfg.model.train_cfg.query_head,
                               a=cfg.model.train_cfg.atss, b=cfg.model.train_cfg.atss)
    cfg.model.test_cfg = dict(eval_module='detr', query_head=cfg.model.test_cfg.query_head)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.aux_heads.b.load_state_dict(model.aux_heads.a.state_dict())
    inputs, samples = preprocess(model, next(iter_images(cfg)))
    return model, inputs, samples[0]


def test_identical_heads_agree_exactly(twin_heads):
    model, inputs, sample = twin_heads
    grads = hc.image_gradients(model, inputs, sample, seed=0)
    assert grads['branches'] == ['detr', 'a', 'b', 'a.pos', 'b.pos']
    a, b = 1, 2
    memory_cos = hc.cosine_matrix(grads['memory_grads'])
    param_cos = hc.cosine_matrix(grads['param_grads'])
    assert memory_cos[a, b] == pytest.approx(1.0, abs=1e-6)
    assert param_cos[a, b] == pytest.approx(1.0, abs=1e-6)
    assert abs(float(memory_cos[0, a])) < 0.9  # the one-to-one branch is another matter
    assert all(float(g.norm()) > 0 for g in grads['memory_grads'])
    kl = hc.kl_matrix(hc.branch_cams(grads, sample))
    assert float(kl[a, b]) == pytest.approx(0.0, abs=1e-9)
    assert float(kl[b, a]) == pytest.approx(0.0, abs=1e-9)
    assert float(kl[0, a]) > 1e-3
    # every encoder parameter is reached by some branch
    sizes = [p.numel() for p in model.query_head.transformer.encoder.parameters()]
    reached = torch.stack(grads['param_grads']).abs().sum(0).split(sizes)
    assert all(float(chunk.sum()) > 0 for chunk in reached)
