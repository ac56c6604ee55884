"""Matching instability (DN-DETR's IS and the changed fraction) on hand-made assignments,
and the per-layer Hungarian matches of a from-scratch quick-start Co-DINO."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.config import Config

from codetr.analysis import instability as ins
from codetr.analysis.model_inputs import build_model

from .tiny_setup import write_tiny_config


def test_query_assignment_inverts_the_gt_to_query_matching():
    v = ins.query_assignment(np.array([4, 0, -1]), num_queries=6)
    assert v.tolist() == [1, -1, -1, -1, 0, -1]


def test_known_changes_give_known_instability():
    before = [np.array([0, 1]), np.array([3]), np.array([5, 6])]
    after = [np.array([0, 2]),  # GT 1 moves from query 1 to the free query 2: IS 2
             np.array([3]),  # unchanged: IS 0
             np.array([6, 5])]  # the two GTs swap queries: IS 2, both changed
    result = ins.compare_matchings(before, after, num_queries=8)
    assert result == dict(is_per_image=round(4 / 3, 4), changed_fraction=0.6,
                          changed_gts=3, num_gts=5, images=3)
    assert ins.compare_matchings(before, before, 8)['is_per_image'] == 0.0


def test_epoch_pairs_and_layers_are_compared_in_order():
    # [checkpoint][layer][image]: layer 1 never changes, layer 0 changes once per pair
    epochs = [[[np.array([0])], [np.array([2])]],
              [[np.array([1])], [np.array([2])]],
              [[np.array([0])], [np.array([2])]]]
    pairs = ins.instability_over_checkpoints(epochs, num_queries=3)
    assert [[layer['changed_fraction'] for layer in pair] for pair in pairs] == [[1.0, 0.0],
                                                                                  [1.0, 0.0]]


def test_mismatched_epochs_are_refused():
    with pytest.raises(ValueError, match='same images'):
        ins.compare_matchings([np.array([0])], [], 4)
    with pytest.raises(ValueError, match='GT boxes'):
        ins.compare_matchings([np.array([0])], [np.array([0, 1])], 4)


def test_layer_matchings_give_each_gt_its_own_query(tmp_path):
    cfg = Config.fromfile(write_tiny_config(tmp_path, num_images=1))
    torch.manual_seed(0)
    model = build_model(cfg)
    matchings = ins.layer_matchings(model, cfg)
    num_layers = len(model.query_head.transformer.decoder.layers)
    assert len(matchings) == num_layers and all(len(images) == 1 for images in matchings)
    for images in matchings:
        for matched in images:
            assert len(matched) > 0 and len(set(matched.tolist())) == len(matched)
            assert 0 <= matched.min() and matched.max() < ins.num_queries_of(model)
    # the same weights match the same way
    again = ins.layer_matchings(model, cfg)
    assert all(ins.compare_matchings(a, b, 30)['changed_gts'] == 0
               for a, b in zip(matchings, again))
