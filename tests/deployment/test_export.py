"""ONNX Runtime and the saved ExportedProgram give the PyTorch model's detections.

One export of the quick-start Co-DINO (``conftest.exported``: symbolic batch / height /
width) runs on synthetic images in two batches of different padded sizes and batch sizes.
The parity rule is the deployment contract (``codetr.deployment.verify``): every PyTorch
detection above 0.05 has one with the same label, box within 1e-2 px, score within 1e-3.
"""
from __future__ import annotations

import copy

import pytest
import torch

from codetr.deployment.export import read_metadata
from codetr.deployment.runtime import OnnxDetector
from codetr.deployment.verify import ParityReport, compare_detections, verify_on_batches
from codetr.models.query_heads import detr_postprocess, finish_detections

from .helpers import EXPORT_EXTRA

onnx = pytest.importorskip('onnx', reason=EXPORT_EXTRA)
for _module in ('onnxruntime', 'onnxscript'):
    pytest.importorskip(_module, reason=EXPORT_EXTRA)


def test_onnx_runtime_matches_pytorch_at_two_sizes(exported, quickstart_model,
                                                   synthetic_batches):
    deployed = OnnxDetector(exported['onnx'], quickstart_model.cfg)
    shapes = {(len(b['inputs']),) + tuple(max(img.shape[i] for img in b['inputs'])
                                          for i in (1, 2)) for b in synthetic_batches}
    assert len(shapes) == 2  # two batch sizes and two padded sizes, one file
    report = verify_on_batches(quickstart_model, deployed, synthetic_batches)
    assert report.ok, report.failures[:5]
    assert report.compared >= 45  # 3 images, most of their 30 detections above 0.05
    assert report.max_box_diff < 1e-2 and report.max_score_diff < 1e-3


def _finished(outputs: tuple, samples: list, post: dict) -> list:
    """Raw graph outputs finished as the runtimes finish them."""
    boxes, scores, labels = outputs
    return [finish_detections(boxes[i], scores[i], labels[i], sample.metainfo,
                              post['max_per_img'], post.get('score_thr', 0.0),
                              post.get('nms'))
            for i, sample in enumerate(samples)]


def reference_and_inputs(model, batches: list[dict]) -> tuple[list, list]:
    """PyTorch detections of each batch, and the preprocessed (images, img_sizes)."""
    references, inputs = [], []
    for batch in batches:
        with torch.no_grad():
            data = model.data_preprocessor(copy.deepcopy(batch), False)
            references.append(model.predict(data['inputs'], data['data_samples']))
        sizes = torch.tensor([s.img_shape for s in data['data_samples']])
        inputs.append((data['inputs'], sizes))
    return references, inputs


def assert_parity(references: list, outputs: list, post: dict) -> None:
    report = ParityReport()
    for samples, raw in zip(references, outputs):
        for sample, got in zip(samples, _finished(raw, samples, post)):
            report.merge(compare_detections(sample.pred_instances, got))
    assert report.ok, report.failures[:5]
    assert report.compared >= 45


def test_exported_program_matches_pytorch_at_two_sizes(traced, quickstart_model,
                                                       synthetic_batches):
    """The traced ExportedProgram (what the .pt2 holds) runs both batches."""
    references, inputs = reference_and_inputs(quickstart_model, synthetic_batches)
    module = traced['program'].module()
    with torch.no_grad():
        outputs = [module(images, sizes) for images, sizes in inputs]
    assert {tuple(images.shape) for images, _ in inputs} == {
        (1, 3) + tuple(inputs[0][0].shape[2:]), (2, 3) + tuple(inputs[1][0].shape[2:])}
    assert_parity(references, outputs, quickstart_model.query_head.test_cfg)


def test_onnx_file_has_standard_ops_dynamic_axes_and_metadata(exported, quickstart_model):
    model = onnx.load(str(exported['onnx']))
    ops = {node.op_type for node in model.graph.node}
    assert 'GridSample' in ops and 'TopK' in ops
    assert all(node.domain in ('', 'ai.onnx') for node in model.graph.node)  # no custom op
    images = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != '' for d in images] == [True, False, True, True]
    meta = read_metadata(exported['onnx'])
    assert meta['top_k'] == 30 and meta['input_spec']['dynamic']
    assert meta['postprocess']['nms'] == {'type': 'soft_nms', 'iou_threshold': 0.8}
    assert meta['classes'] == list(quickstart_model.dataset_meta['classes'])
    assert meta['preprocess']['bgr_to_rgb'] is True


def test_finish_detections_after_a_top_k_equals_detr_postprocess():
    """The runtimes' post-processing (threshold, rescale, soft-NMS, cap) is predict's."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 3, generator=gen) * 2 - 2
    boxes = torch.rand(20, 4, generator=gen) * 0.5 + 0.25
    meta = dict(img_shape=(90, 120), scale_factor=(0.5, 0.6))
    nms = dict(type='soft_nms', iou_threshold=0.3)
    expected = detr_postprocess(logits, boxes, meta, max_per_img=15, score_thr=0.5, nms=nms)
    top = detr_postprocess(logits, boxes, meta, max_per_img=15, rescale=False)
    got = finish_detections(top.bboxes, top.scores, top.labels, meta, 15, 0.5, nms)
    assert (top.scores <= 0.5).any() and 0 < len(got) <= int((top.scores > 0.5).sum())
    for key in ('bboxes', 'scores', 'labels'):
        assert torch.equal(getattr(got, key), getattr(expected, key))
