"""Parity of an exported model with the PyTorch model on real images.

The criterion (the deployment contract): every PyTorch detection scoring above 0.05 has an
exported-model detection with the same label, a box within 1e-2 px (each coordinate) and a
score within 1e-3, and the exported model has no extra detection above 0.05 + 1e-3.
Detections are paired one to one by the Hungarian method (same label only), not by
position: soft-NMS or a near-tie may order two detections differently without either
changing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import nn

from codetr.structures import DetDataSample

from .runtime import DeployedDetector, pad_batch

SCORE_THR = 0.05
BOX_ATOL = 1e-2
SCORE_ATOL = 1e-3
_UNMATCHABLE = 1e9


@dataclass
class ParityReport:
    """What :func:`compare_detections` found, summed over the images given to it."""

    compared: int = 0
    failures: list[str] = field(default_factory=list)
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    # (image, detections compared, largest box difference, largest score difference)
    per_image: list[tuple[str, int, float, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def merge(self, other: ParityReport) -> None:
        self.compared += other.compared
        self.failures += other.failures
        self.max_box_diff = max(self.max_box_diff, other.max_box_diff)
        self.max_score_diff = max(self.max_score_diff, other.max_score_diff)
        self.per_image += other.per_image

    def summary(self) -> str:
        verdict = 'OK' if self.ok else f'FAILED ({len(self.failures)} detections)'
        return (f'{verdict}: {self.compared} detections compared, largest box difference '
                f'{self.max_box_diff:.3g} px, largest score difference {self.max_score_diff:.3g}')


def compare_detections(ref: InstanceData, got: InstanceData, score_thr: float = SCORE_THR,
                       box_atol: float = BOX_ATOL, score_atol: float = SCORE_ATOL,
                       name: str = '') -> ParityReport:
    """Pair ``got`` with the detections of ``ref`` above ``score_thr`` (see module note)."""
    ref = ref[ref.scores > score_thr]
    got = got[got.scores > score_thr - score_atol]
    report = ParityReport(compared=len(ref))
    if len(ref) and len(got):
        box_diff = (ref.bboxes[:, None].double() - got.bboxes[None].double()).abs().amax(-1)
        score_diff = (ref.scores[:, None].double() - got.scores[None].double()).abs()
        same_label = ref.labels[:, None] == got.labels[None]
        cost = torch.where(same_label, box_diff / box_atol + score_diff / score_atol,
                           torch.full_like(box_diff, _UNMATCHABLE))
        rows, cols = linear_sum_assignment(cost.numpy())
    else:
        rows = cols = np.zeros(0, dtype=np.int64)
    matched_ref, matched_got = set(), set()
    for r, c in zip(rows.tolist(), cols.tolist()):
        if not bool(same_label[r, c]):
            continue
        matched_ref.add(r)
        matched_got.add(c)
        box, score = float(box_diff[r, c]), float(score_diff[r, c])
        report.max_box_diff = max(report.max_box_diff, box)
        report.max_score_diff = max(report.max_score_diff, score)
        if box > box_atol or score > score_atol:
            report.failures.append(f'{name} label {int(ref.labels[r])} score '
                                   f'{float(ref.scores[r]):.4f}: box differs by {box:.3g} px, '
                                   f'score by {score:.3g}')
    for r in sorted(set(range(len(ref))) - matched_ref):
        report.failures.append(f'{name} label {int(ref.labels[r])} score '
                               f'{float(ref.scores[r]):.4f} box {ref.bboxes[r].tolist()}: '
                               'no exported detection with this label')
    for c in range(len(got)):
        if c not in matched_got and float(got.scores[c]) > score_thr + score_atol:
            report.failures.append(f'{name} extra exported detection label '
                                   f'{int(got.labels[c])} score {float(got.scores[c]):.4f}')
    report.per_image.append((name, report.compared, report.max_box_diff,
                             report.max_score_diff))
    return report


def reference_predict(model: nn.Module, data: dict,
                      static_shape: tuple[int, int, int] | None) -> list[DetDataSample]:
    """The PyTorch model's detections of packed ``data``; for a static graph on the batch
    padded as the runtime pads it (padding takes part in the two-stage selection)."""
    with torch.no_grad():
        batch = model.data_preprocessor(data, False)
        inputs, samples = batch['inputs'], batch['data_samples']
        if static_shape is not None:
            pad_value = float(getattr(model.data_preprocessor, 'pad_value', 0))
            inputs = pad_batch(inputs, static_shape[1:], pad_value)
            for sample in samples:
                sample.set_metainfo({'batch_input_shape': tuple(inputs.shape[-2:])})
        return model.predict(inputs, samples)


def verify_on_batches(model: nn.Module, deployed: DeployedDetector,
                      batches: Sequence[dict], **tolerances: float) -> ParityReport:
    """Compare ``model`` and ``deployed`` on packed batches (``inputs`` + ``data_samples``,
    as the test pipeline gives them); each batch is copied for each side."""
    import copy
    report = ParityReport()
    for batch in batches:
        ref = reference_predict(model, copy.deepcopy(batch), deployed.static_shape)
        got = deployed.test_step(copy.deepcopy(batch))
        for r, g in zip(ref, got):
            name = str(r.metainfo.get('img_path', r.metainfo.get('img_id', '')))
            report.merge(compare_detections(r.pred_instances, g.pred_instances, name=name,
                                            **tolerances))
    return report
