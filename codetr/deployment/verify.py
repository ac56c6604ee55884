"""Parity of an exported model with the PyTorch model on real images.

The criterion (the deployment contract): every PyTorch detection scoring above 0.05 has an
exported-model detection with the same label, a box within 1e-2 px (each coordinate) and a
score within 1e-3, and the exported model has no extra detection above 0.05 + 1e-3.
Detections are paired one to one by the Hungarian method (same label only), not by
position: soft-NMS or a near-tie may order two detections differently without either
changing.

Boundary cases, where float32 rounding may legitimately change which detections exist
(both are counted in :attr:`ParityReport.borderline`, never hidden):

* at the score threshold: a PyTorch detection scoring within ``score_atol`` of the
  threshold may have no partner (its partner may fall below it), and an exported one
  scoring within ``score_atol`` of it may be extra;
* at the top-k cut (``top_k`` given and a side returns ``top_k`` detections): a detection
  of one side scoring at most ``score_atol`` above the other side's lowest kept score may
  be unmatched, as its partner may have tied there with the first left-out candidate.

A matched pair is always held to the full tolerances, whatever its score.

float16 graphs (``--fp16``) are held to :data:`FP16_TOLERANCES` instead: 11-bit mantissas
put one rounding step at 0.06-0.125 px for coordinates of 64-256 px; measured on the
quick-start model (160 px synthetic images, against float32 PyTorch) the largest differences
were 0.17 px and 1.2e-3 in score, same labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from codetr.structures import DetDataSample

from .runtime import DeployedDetector, pad_batch

SCORE_THR = 0.05
BOX_ATOL = 1e-2
SCORE_ATOL = 1e-3
# float16 ONNX graphs: ~3x the largest differences measured (module note).
FP16_TOLERANCES = dict(box_atol=0.5, score_atol=5e-3)
_UNMATCHABLE = 1e9


@dataclass
class ParityReport:
    """What :func:`compare_detections` found, summed over the images given to it."""

    compared: int = 0
    failures: list[str] = field(default_factory=list)
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    # detections left unmatched at the score threshold or the top-k cut (module note)
    borderline: int = 0
    # (image, detections compared, largest box difference, largest score difference)
    per_image: list[tuple[str, int, float, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def merge(self, other: ParityReport) -> None:
        self.compared += other.compared
        self.borderline += other.borderline
        self.failures += other.failures
        self.max_box_diff = max(self.max_box_diff, other.max_box_diff)
        self.max_score_diff = max(self.max_score_diff, other.max_score_diff)
        self.per_image += other.per_image

    def summary(self) -> str:
        verdict = 'OK' if self.ok else f'FAILED ({len(self.failures)} detections)'
        borderline = (f', {self.borderline} unmatched at the score threshold / top-k cut'
                      if self.borderline else '')
        return (f'{verdict}: {self.compared} detections compared, largest box difference '
                f'{self.max_box_diff:.3g} px, largest score difference '
                f'{self.max_score_diff:.3g}{borderline}')


def _cutoff(scores: Tensor, top_k: int | None) -> float | None:
    """The lowest kept score of a list cut at ``top_k`` (None when it was not cut)."""
    return float(scores.min()) if top_k and len(scores) >= top_k else None


def _at_boundary(score: float, threshold: float, other_cut: float | None, atol: float) -> bool:
    """Whether a detection may be unmatched: within ``atol`` of the threshold, or of the
    other side's top-k cut (its partner may have tied there with the first left-out
    candidate)."""
    return abs(score - threshold) <= atol or (other_cut is not None
                                              and score <= other_cut + atol)


def _pair(ref: InstanceData, got: InstanceData, box_atol: float,
          score_atol: float) -> tuple[list[tuple[int, int]], Tensor, Tensor]:
    """Hungarian pairs (same label only) and the (N_ref, N_got) box / score differences."""
    if not (len(ref) and len(got)):
        return [], torch.zeros(0, 0), torch.zeros(0, 0)
    box_diff = (ref.bboxes[:, None].double() - got.bboxes[None].double()).abs().amax(-1)
    score_diff = (ref.scores[:, None].double() - got.scores[None].double()).abs()
    same_label = ref.labels[:, None] == got.labels[None]
    cost = torch.where(same_label, box_diff / box_atol + score_diff / score_atol,
                       torch.full_like(box_diff, _UNMATCHABLE))
    rows, cols = linear_sum_assignment(cost.numpy())
    pairs = [(r, c) for r, c in zip(rows.tolist(), cols.tolist()) if bool(same_label[r, c])]
    return pairs, box_diff, score_diff


def compare_detections(ref: InstanceData, got: InstanceData, score_thr: float = SCORE_THR,
                       box_atol: float = BOX_ATOL, score_atol: float = SCORE_ATOL,
                       name: str = '', top_k: int | None = None) -> ParityReport:
    """Pair ``got`` with the detections of ``ref`` above ``score_thr`` (see module note).

    Args:
        ref, got: all detections of one image (``bboxes`` (N, 4), ``scores`` (N,),
            ``labels`` (N,)) of PyTorch and of the exported model.
        top_k: the most detections a side returns (``max_per_img``), for the top-k cut
            rule; None leaves that rule out.
    """
    ref_cut, got_cut = _cutoff(ref.scores, top_k), _cutoff(got.scores, top_k)
    ref = ref[ref.scores > score_thr]
    got = got[got.scores > score_thr - score_atol]
    report = ParityReport(compared=len(ref))
    pairs, box_diff, score_diff = _pair(ref, got, box_atol, score_atol)
    for r, c in pairs:
        box, score = float(box_diff[r, c]), float(score_diff[r, c])
        report.max_box_diff = max(report.max_box_diff, box)
        report.max_score_diff = max(report.max_score_diff, score)
        if box > box_atol or score > score_atol:
            report.failures.append(f'{name} label {int(ref.labels[r])} score '
                                   f'{float(ref.scores[r]):.4f}: box differs by {box:.3g} px, '
                                   f'score by {score:.3g}')
    for r in sorted(set(range(len(ref))) - {r for r, _ in pairs}):
        if _at_boundary(float(ref.scores[r]), score_thr, got_cut, score_atol):
            report.borderline += 1
            continue
        report.failures.append(f'{name} label {int(ref.labels[r])} score '
                               f'{float(ref.scores[r]):.4f} box {ref.bboxes[r].tolist()}: '
                               'no exported detection with this label')
    for c in sorted(set(range(len(got))) - {c for _, c in pairs}):
        score = float(got.scores[c])
        if score <= score_thr + score_atol:
            continue  # below the threshold within the tolerance: not a detection of ref's set
        if _at_boundary(score, score_thr, ref_cut, score_atol):
            report.borderline += 1
            continue
        report.failures.append(f'{name} extra exported detection label '
                               f'{int(got.labels[c])} score {score:.4f}')
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


def tolerances_for(deployed: DeployedDetector) -> dict[str, float]:
    """The parity tolerances of an exported file: float32 ones, or :data:`FP16_TOLERANCES`
    for a float16 graph."""
    if deployed.metadata.get('precision') == 'float16':
        return dict(FP16_TOLERANCES)
    return dict(box_atol=BOX_ATOL, score_atol=SCORE_ATOL)


def verify_on_batches(model: nn.Module, deployed: DeployedDetector,
                      batches: Sequence[dict], **tolerances: float) -> ParityReport:
    """Compare ``model`` and ``deployed`` on packed batches (``inputs`` + ``data_samples``,
    as the test pipeline gives them); each batch is copied for each side. Tolerances
    default to :func:`tolerances_for`; the top-k cut is the exported file's
    ``max_per_img``."""
    import copy
    tolerances = {**tolerances_for(deployed), **tolerances}
    top_k = int(deployed.metadata.get('postprocess', {}).get('max_per_img', 0)) or None
    report = ParityReport()
    for batch in batches:
        ref = reference_predict(model, copy.deepcopy(batch), deployed.static_shape)
        got = deployed.test_step(copy.deepcopy(batch))
        for r, g in zip(ref, got):
            name = str(r.metainfo.get('img_path', r.metainfo.get('img_id', '')))
            report.merge(compare_detections(r.pred_instances, g.pred_instances, name=name,
                                            top_k=top_k, **tolerances))
    return report
