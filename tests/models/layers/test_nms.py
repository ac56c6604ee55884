"""NMS ops: hand-computed hard / soft-NMS results, class offsets, split path, empty input."""
import math

import pytest
import torch

from codetr.models.layers import batched_nms, multiclass_nms, nms, soft_nms

# A = [0,0,10,10]; B = top half of A (IoU(A,B) = 50/100 = 0.5);
# C = A shifted right by 5 (IoU(A,C) = 50/150 = 1/3); IoU(B,C) = 25/125 = 0.2.
BOXES = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 5.], [5., 0., 15., 10.]])
SCORES = torch.tensor([0.9, 0.8, 0.7])


def _kernel_soft_nms(boxes, scores, thr, sigma, min_score, method):
    """Scalar transcription of the reference kernel's loop (in-place swaps), for parity."""
    b = boxes.tolist()
    sc = scores.tolist()
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    ind = list(range(len(b)))
    n, out = len(b), []
    for i in range(len(b)):
        if i >= n:
            break
        best = max(range(i, n), key=lambda p: (sc[p], -p))
        for arr in (b, sc, area, ind):
            arr[i], arr[best] = arr[best], arr[i]
        out.append((ind[i], sc[i]))
        pos = i + 1
        while pos < n:
            lt = [max(b[i][0], b[pos][0]), max(b[i][1], b[pos][1])]
            rb = [min(b[i][2], b[pos][2]), min(b[i][3], b[pos][3])]
            inter = max(0., rb[0] - lt[0]) * max(0., rb[1] - lt[1])
            iou = inter / (area[i] + area[pos] - inter)
            if method == 'linear':
                sc[pos] *= (1 - iou) if iou >= thr else 1.
            else:
                sc[pos] *= math.exp(-iou * iou / sigma)
            if sc[pos] < min_score:
                for arr in (b, sc, area, ind):
                    arr[pos] = arr[n - 1]
                n -= 1
                pos -= 1
            pos += 1
    return out


def test_hard_nms_suppresses_strictly_above_threshold():
    dets, keep = nms(BOXES, SCORES, iou_threshold=0.4)
    assert keep.tolist() == [0, 2]
    torch.testing.assert_close(dets, torch.tensor([[0., 0., 10., 10., 0.9],
                                                   [5., 0., 15., 10., 0.7]]))
    # IoU(A, B) = 0.5 exactly is not > 0.5: everything survives.
    assert nms(BOXES, SCORES, iou_threshold=0.5)[1].tolist() == [0, 1, 2]


def test_hard_nms_score_threshold_and_max_num():
    _, keep = nms(BOXES, SCORES, iou_threshold=0.9, score_threshold=0.75)
    assert keep.tolist() == [0, 1]
    assert nms(BOXES, SCORES, iou_threshold=0.9, max_num=1)[1].tolist() == [0]


def test_soft_nms_linear_by_hand():
    dets, inds = soft_nms(BOXES, SCORES, iou_threshold=0.3, method='linear')
    # pick A; B: 0.8 * (1 - 0.5) = 0.4; C: 0.7 * (1 - 1/3) = 0.4667; pick C (IoU(B,C) 0.2 < 0.3)
    assert inds.tolist() == [0, 2, 1]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7 * 2 / 3, 0.4]))
    torch.testing.assert_close(dets[:, :4], BOXES[[0, 2, 1]])


def test_soft_nms_linear_decays_at_threshold_equality_and_drops_below_min_score():
    # IoU(A, B) = 0.5 >= 0.5 decays B to 0.4, below min_score 0.45; C is untouched.
    dets, inds = soft_nms(BOXES, SCORES, iou_threshold=0.5, min_score=0.45, method='linear')
    assert inds.tolist() == [0, 2]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7]))


def test_soft_nms_gaussian_by_hand():
    dets, inds = soft_nms(BOXES, SCORES, sigma=0.5, method='gaussian')
    b_after_a = 0.8 * math.exp(-0.25 / 0.5)
    c_after_a = 0.7 * math.exp(-(1 / 9) / 0.5)  # 0.5605 > b_after_a = 0.4852: C next
    b_after_c = b_after_a * math.exp(-0.04 / 0.5)
    assert inds.tolist() == [0, 2, 1]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, c_after_a, b_after_c]))


def test_soft_nms_naive_zeroes_overlaps_at_or_above_threshold():
    dets, inds = soft_nms(BOXES, SCORES, iou_threshold=0.4, method='naive')
    assert inds.tolist() == [0, 2]  # B (IoU 0.5) zeroed and dropped, C (IoU 1/3) kept
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7]))


@pytest.mark.parametrize('method', ['linear', 'gaussian'])
def test_soft_nms_matches_kernel_loop_with_ties_and_drops(method):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], 1)
    scores = (torch.rand(60, generator=g) * 5).round() / 5 + 0.05  # many exact ties
    ref = _kernel_soft_nms(boxes, scores, 0.3, 0.5, 0.2, method)
    dets, inds = soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=0.2,
                          method=method)
    assert 0 < len(ref) < 60  # the case exercises removals
    assert inds.tolist() == [i for i, _ in ref]
    torch.testing.assert_close(dets[:, 4], torch.tensor([s for _, s in ref]))
    assert torch.all(dets[1:, 4] <= dets[:-1, 4])


def test_batched_nms_class_offset_keeps_same_box_in_other_class():
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.], [0., 0., 10., 10.]])
    scores = torch.tensor([0.9, 0.8, 0.6])
    idxs = torch.tensor([0, 1, 0])
    dets, keep = batched_nms(boxes, scores, idxs, dict(type='nms', iou_threshold=0.5))
    assert keep.tolist() == [0, 1]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.8]))
    torch.testing.assert_close(dets[:, :4], boxes[:2])  # returned boxes are un-offset
    _, keep = batched_nms(boxes, scores, idxs, dict(type='nms', iou_threshold=0.5),
                          class_agnostic=True)
    assert keep.tolist() == [0]


def test_batched_soft_nms_returns_decayed_scores_sorted():
    idxs = torch.zeros(3, dtype=torch.long)
    cfg = dict(type='soft_nms', iou_threshold=0.3, method='linear')
    dets, keep = batched_nms(BOXES, SCORES, idxs, cfg)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7 * 2 / 3, 0.4]))
    # The split path (one group at a time) gives the same result.
    split_dets, split_keep = batched_nms(BOXES, SCORES, idxs, dict(cfg, split_thr=1))
    assert split_keep.tolist() == keep.tolist()
    torch.testing.assert_close(split_dets, dets)


def test_batched_nms_split_path_sorts_groups_together_and_caps():
    idxs = torch.tensor([1, 0, 1])
    cfg = dict(type='nms', iou_threshold=0.4)
    _, keep = batched_nms(BOXES, SCORES, idxs, cfg)
    _, split_keep = batched_nms(BOXES, SCORES, idxs, dict(cfg, split_thr=1))
    assert keep.tolist() == split_keep.tolist() == [0, 1, 2]
    _, capped = batched_nms(BOXES, SCORES, idxs, dict(cfg, split_thr=1, max_num=2))
    assert capped.tolist() == [0, 1]


def test_batched_nms_none_cfg_only_sorts():
    dets, keep = batched_nms(BOXES, SCORES.flip(0), torch.zeros(3), None)
    assert keep.tolist() == [2, 1, 0]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.8, 0.7]))


def test_empty_input_everywhere():
    boxes, scores = torch.zeros(0, 4), torch.zeros(0)
    for cfg in (dict(type='nms', iou_threshold=0.5), dict(type='soft_nms', iou_threshold=0.5)):
        dets, keep = batched_nms(boxes, scores, torch.zeros(0, dtype=torch.long), cfg)
        assert dets.shape == (0, 5) and keep.shape == (0,)
    dets, inds = soft_nms(boxes, scores)
    assert dets.shape == (0, 5) and inds.shape == (0,)
    dets, labels = multiclass_nms(boxes, torch.zeros(0, 3), 0.05, dict(iou_threshold=0.5))
    assert dets.shape == (0, 5) and labels.shape == (0,)


def test_multiclass_nms_thresholds_ignores_background_and_caps():
    # Two boxes, 2 classes + background; box 1 overlaps box 0 with IoU 0.5.
    boxes = BOXES[:2]
    scores = torch.tensor([[0.9, 0.3, 0.99],
                           [0.8, 0.04, 0.99]])  # last column is background: never returned
    dets, labels, inds = multiclass_nms(boxes, scores, 0.05, dict(type='nms', iou_threshold=0.4),
                                        return_inds=True)
    # candidates (box, class): (0,0) .9, (0,1) .3, (1,0) .8; (1,1) .04 is under score_thr.
    # (1,0) is suppressed by (0,0) in class 0.
    assert labels.tolist() == [0, 1]
    assert inds.tolist() == [0, 1]  # indices into the flattened (box, class) candidates
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.3]))
    dets, labels = multiclass_nms(boxes, scores, 0.05, dict(type='nms', iou_threshold=0.4),
                                  max_num=1, score_factors=torch.tensor([0.5, 1.0]))
    # factors give (0,0) .45, (0,1) .15, (1,0) .8: now box 1 wins class 0 and is the top one.
    torch.testing.assert_close(dets, torch.tensor([[0., 0., 10., 5., 0.8]]))
    assert labels.tolist() == [0]


def test_bad_config_messages():
    with pytest.raises(ValueError, match='soft_nms method'):
        soft_nms(BOXES, SCORES, method='cubic')
    with pytest.raises(ValueError, match="'nms' or 'soft_nms'"):
        batched_nms(BOXES, SCORES, torch.zeros(3), dict(type='matrix_nms'))
