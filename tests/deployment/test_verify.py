"""The parity rule of --verify, on hand-made detections."""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData

from codetr.deployment.verify import compare_detections


def _dets(boxes, scores, labels) -> InstanceData:
    return InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                        scores=torch.tensor(scores), labels=torch.tensor(labels))


REF = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], [0.9, 0.5, 0.04], [0, 1, 1])


def test_equal_detections_in_another_order_pass():
    got = _dets([[5, 5, 20.005, 20], [0, 0, 10, 10]], [0.5004, 0.9], [1, 0])
    report = compare_detections(REF, got)
    assert report.ok and report.compared == 2  # 0.04 is below the 0.05 threshold
    assert abs(report.max_box_diff - 0.005) < 1e-4 and abs(report.max_score_diff - 4e-4) < 1e-6


def test_a_box_off_by_more_than_1e2_px_fails_and_is_reported():
    got = _dets([[0, 0, 10, 10.02], [5, 5, 20, 20]], [0.9, 0.5], [0, 1])
    report = compare_detections(REF, got)
    assert not report.ok and len(report.failures) == 1
    assert 'box differs by 0.02' in report.failures[0]


def test_a_changed_label_or_score_fails():
    assert not compare_detections(REF, _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.5],
                                             [0, 2])).ok
    assert not compare_detections(REF, _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.502],
                                             [0, 1])).ok


def test_an_extra_exported_detection_fails_but_a_borderline_one_does_not():
    base = [[0, 0, 10, 10], [5, 5, 20, 20]]
    borderline = _dets(base + [[3, 3, 4, 4]], [0.9, 0.5, 0.0505], [0, 1, 2])
    assert compare_detections(REF, borderline).ok
    extra = _dets(base + [[3, 3, 4, 4]], [0.9, 0.5, 0.3], [0, 1, 2])
    report = compare_detections(REF, extra)
    assert not report.ok and 'extra exported detection label 2' in report.failures[0]


def test_missing_detections_fail():
    report = compare_detections(REF, _dets([[0, 0, 10, 10]], [0.9], [0]))
    assert not report.ok and 'no exported detection' in report.failures[0]
    assert not compare_detections(REF, _dets(torch.zeros(0, 4).tolist(), [], [])).ok


def test_a_missing_detection_at_the_threshold_is_borderline_not_a_failure():
    """A PyTorch detection within the score tolerance of 0.05 may lose its partner (which
    then scores below the threshold); counted as borderline. Just outside it fails."""
    ref = _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.0508], [0, 1])
    got = _dets([[0, 0, 10, 10]], [0.9], [0])
    report = compare_detections(ref, got)
    assert report.ok and report.borderline == 1 and report.compared == 2
    assert 'unmatched at the score threshold' in report.summary()
    ref_out = _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.0512], [0, 1])
    assert not compare_detections(ref_out, got).ok


def test_the_top_k_cut_tolerates_a_tie_but_not_a_clear_miss():
    """Lists cut at top_k = 3: the last kept detection of each side may be swapped for a
    candidate that tied with it (within the score tolerance); a clear one may not."""
    boxes = [[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40]]
    ref = _dets(boxes, [0.9, 0.5, 0.3000], [0, 1, 2])
    swapped = _dets(boxes[:2] + [[50, 50, 60, 60]], [0.9, 0.5, 0.2995], [0, 1, 3])
    report = compare_detections(ref, swapped, top_k=3)
    assert report.ok and report.borderline == 2  # one missing, one extra, both at the cut
    assert not compare_detections(ref, swapped).ok  # without top_k: no cut rule
    clear = _dets(boxes[:2] + [[50, 50, 60, 60]], [0.9, 0.5, 0.2950], [0, 1, 3])
    report = compare_detections(ref, clear, top_k=3)
    assert not report.ok and len(report.failures) == 1 and report.borderline == 1


def test_a_matched_pair_at_the_boundary_is_still_held_to_the_tolerances():
    ref = _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.0505], [0, 1])
    got = _dets([[0, 0, 10, 10], [5, 5, 20, 20.05]], [0.9, 0.0505], [0, 1])
    report = compare_detections(ref, got, top_k=2)
    assert not report.ok and 'box differs by 0.05' in report.failures[0]
