"""ONNX Runtime and the saved ExportedProgram give the PyTorch model's detections.

One export of the quick-start Co-DINO (``conftest.exported``: symbolic batch / height /
width) runs on synthetic images in two batches of different padded sizes and batch sizes.
The parity rule is the deployment contract (``codetr.deployment.verify``): every PyTorch
detection above 0.05 has one with the same label, box within 1e-2 px, score within 1e-3.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys

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
    assert report.compared >= 60  # 4 images, most of their 30 detections above 0.05
    assert report.max_box_diff < 1e-2 and report.max_score_diff < 1e-3


# Run in a fresh interpreter where ``import codetr`` fails: load the program, run it on the
# saved batches, save its raw outputs.
WITHOUT_CODETR = """
import sys
sys.modules['codetr'] = None
import torch
extra = {'codetr.json': ''}
program = torch.export.load(sys.argv[1], extra_files=extra).module()
with torch.no_grad():
    outputs = [program(images, sizes) for images, sizes in torch.load(sys.argv[2])]
torch.save({'outputs': outputs, 'metadata': extra['codetr.json']}, sys.argv[3])
"""


def test_program_runs_without_codetr_and_matches_pytorch(exported, quickstart_model,
                                                          synthetic_batches, tmp_path):
    """The .pt2 needs plain torch only; its detections (finished as the runtime finishes
    them) are the PyTorch model's, at two sizes."""
    inputs, references = [], []
    for batch in synthetic_batches:
        with torch.no_grad():
            data = quickstart_model.data_preprocessor(copy.deepcopy(batch), False)
            references.append(quickstart_model.predict(data['inputs'], data['data_samples']))
        sizes = torch.tensor([s.img_shape for s in data['data_samples']])
        inputs.append((data['inputs'], sizes))
    torch.save(inputs, tmp_path / 'inputs.pt')
    result = subprocess.run(
        [sys.executable, '-c', WITHOUT_CODETR, str(exported['torch_export']),
         str(tmp_path / 'inputs.pt'), str(tmp_path / 'outputs.pt')],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(tmp_path / 'outputs.pt', weights_only=True)
    post = json.loads(saved['metadata'])['postprocess']
    report = ParityReport()
    for samples, (boxes, scores, labels) in zip(references, saved['outputs']):
        for i, sample in enumerate(samples):
            got = finish_detections(boxes[i], scores[i], labels[i], sample.metainfo,
                                    post['max_per_img'], post['score_thr'], post['nms'])
            report.merge(compare_detections(sample.pred_instances, got))
    assert report.ok, report.failures[:5]
    assert report.compared >= 60


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
