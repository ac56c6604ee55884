"""Exported models behind codetr.apis and the demo, and the static-graph batching."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codetr.apis import DetInferencer, inference_detector, init_deployed_detector
from codetr.deployment.runtime import DeployedDetector, pad_batch

from .helpers import EXPORT_EXTRA

for _module in ('onnx', 'onnxruntime', 'onnxscript'):
    pytest.importorskip(_module, reason=EXPORT_EXTRA)


def test_det_inferencer_with_onnxruntime_matches_pytorch(exported, quickstart_model,
                                                         synthetic_val, tmp_path):
    cfg = quickstart_model.cfg
    image = str(sorted(synthetic_val.iterdir())[0])
    ort = DetInferencer(cfg, weights=str(exported['onnx']), backend='onnxruntime')
    result = ort(image, out_dir=str(tmp_path), pred_score_thr=0.3)
    pred = result['predictions'][0]
    expected = inference_detector(quickstart_model, image).pred_instances
    assert len(pred['scores']) == len(expected)
    np.testing.assert_allclose(pred['scores'], expected.scores.numpy(), atol=1e-3)
    np.testing.assert_allclose(pred['bboxes'], expected.bboxes.numpy(), atol=1e-2)
    assert pred['label_names'][0] in quickstart_model.dataset_meta['classes']
    drawn = result['visualization'][0]
    original = ort.draw(image, ort._predict([image])[0], score_thr=1.1)  # nothing drawn
    assert drawn.shape == original.shape and (drawn != original).any()
    assert (tmp_path / 'vis' / f'{tmp_path.joinpath(image).stem}.png').is_file()
    saved = json.loads((tmp_path / 'preds' / f'{tmp_path.joinpath(image).stem}.json')
                       .read_text())
    assert saved['labels'] == pred['labels']


def test_image_demo_draws_onnxruntime_detections(exported, quickstart_model, synthetic_val,
                                                 tmp_path, repo_root):
    import importlib.util
    spec = importlib.util.spec_from_file_location('image_demo', repo_root / 'demo/image_demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    config = repo_root / 'configs/quickstart/co_dino_r18_k0_quickstart_synthetic.py'
    demo.main([str(synthetic_val), str(config), '--weights', str(exported['onnx']),
               '--backend', 'onnxruntime', '--out-dir', str(tmp_path), '--pred-score-thr',
               '0.5'])
    assert len(list((tmp_path / 'vis').glob('*.png'))) == 3
    preds = [json.loads(p.read_text()) for p in (tmp_path / 'preds').glob('*.json')]
    assert len(preds) == 3 and all(max(p['scores']) > 0.5 for p in preds)


def test_deployed_detector_needs_the_exported_file(quickstart_model):
    with pytest.raises(ValueError, match='exported file'):
        init_deployed_detector(quickstart_model.cfg, None)
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        init_deployed_detector(quickstart_model.cfg, 'missing.onnx')
    with pytest.raises(ValueError, match=r"backend='onnxruntime' runs a \.onnx file.*"
                                         "backend='pytorch'"):
        init_deployed_detector(quickstart_model.cfg, 'epoch_8.pth')
    with pytest.raises(ValueError, match=r"backend='export' runs a \.pt2 file"):
        init_deployed_detector(quickstart_model.cfg, 'model.onnx', backend='export')


class _Recorder(DeployedDetector):
    """A static graph of batch 2 at 64 x 96 whose run() records what it is given."""

    def __init__(self) -> None:
        self.static_shape = (2, 64, 96)
        self.metadata = {'preprocess': {'pad_value': -1.0}}
        self.calls = []

    def run(self, images, sizes):
        self.calls.append((images.clone(), sizes.clone()))
        batch = images.shape[0]
        return (sizes[:, None, :].float().expand(batch, 3, 2).repeat(1, 1, 2),
                torch.ones(batch, 3), torch.zeros(batch, 3, dtype=torch.int64))


def test_static_graph_gets_padded_chunked_and_filled_batches():
    runner = _Recorder()
    images = torch.zeros(3, 3, 50, 90)
    sizes = torch.tensor([[50, 90], [40, 80], [30, 70]])
    boxes, scores, _ = runner.run_batch(images, sizes)
    assert boxes.shape == (3, 3, 4) and torch.equal(boxes[:, 0, :2], sizes.float())
    (first, first_sizes), (second, second_sizes) = runner.calls
    assert first.shape == second.shape == (2, 3, 64, 96)
    assert (first[:, :, 50:] == -1).all() and (first[:, :, :, 90:] == -1).all()
    assert torch.equal(second_sizes, torch.tensor([[30, 70], [64, 96]]))  # filled up
    with pytest.raises(ValueError, match='--dynamic-shape'):
        pad_batch(torch.zeros(1, 3, 65, 10), (64, 96), 0.0)


def test_session_options_defaults_and_overrides():
    import onnxruntime as ort

    from codetr.deployment.runtime import session_options_for
    options = session_options_for(2, {'enable_mem_pattern': False,
                                      'session.intra_op.allow_spinning': False})
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    assert session_options_for().intra_op_num_threads == 0  # ONNX Runtime's own choice
    with pytest.raises(ValueError, match="neither an onnxruntime.SessionOptions attribute"):
        session_options_for(None, {'enable_mem_patern': False})
