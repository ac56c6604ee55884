"""tools/deployment/export_onnx.py refuses what it cannot do before tracing anything, and
tools/deployment/build_trt_engine.py works up to the point where a GPU is needed."""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest
import torch

from codetr.deployment.commands import default_input_shape, export_main
from codetr.deployment.tensorrt import profile_shapes, trtexec_command

from .helpers import EXPORT_EXTRA, QUICKSTART_K0, QUICKSTART_K2, R50_CO_DINO

for _module in ('onnx', 'onnxruntime', 'onnxscript'):
    pytest.importorskip(_module, reason=EXPORT_EXTRA)


@pytest.fixture(scope='module')
def checkpoint(quickstart_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('ckpt') / 'k0.pth'
    torch.save({'state_dict': quickstart_model.state_dict(),
                'meta': {'dataset_meta': quickstart_model.dataset_meta}}, path)
    return path


def test_existing_output_is_kept_without_force(checkpoint, tmp_path):
    out = tmp_path / 'model.onnx'
    out.write_text('keep me')
    with pytest.raises(SystemExit, match='exists; pass --force'):
        export_main([str(QUICKSTART_K0), str(checkpoint), '--out', str(out)])
    assert out.read_text() == 'keep me'


def test_aux_head_evaluation_stops_with_what_to_change(checkpoint, tmp_path):
    out = tmp_path / 'model.onnx'
    with pytest.raises(SystemExit, match="eval_module='one-stage'.*"
                                         'model.test_cfg.eval_module=detr'):
        export_main([str(QUICKSTART_K2), str(checkpoint), '--out', str(out),
                     '--cfg-options', 'model.test_cfg.eval_module=one-stage'])
    assert not out.exists()


def test_bad_format_options_are_refused(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match=r'should end in \.pt2'):
        export_main([str(QUICKSTART_K0), str(checkpoint), '--out', str(tmp_path / 'm.onnx'),
                     '--format', 'torch_export'])
    with pytest.raises(SystemExit, match='--fp16 makes a float16 ONNX graph'):
        export_main([str(QUICKSTART_K0), str(checkpoint), '--out', str(tmp_path / 'm.pt2'),
                     '--fp16'])
    with pytest.raises(SystemExit, match='opset >= 16'):
        export_main([str(QUICKSTART_K0), str(checkpoint), '--out', str(tmp_path / 'm.onnx'),
                     '--opset', '13'])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_default_static_shape_comes_from_the_test_pipeline():
    from mmengine.config import Config
    assert default_input_shape(Config.fromfile(str(QUICKSTART_K0))) == (160, 160)
    assert default_input_shape(Config.fromfile(str(R50_CO_DINO))) == (800, 1333)


DYNAMIC = {'input_spec': dict(batch=2, height=800, width=1333, dynamic=True, min_side=65,
                              max_side=2048, max_batch=64)}
STATIC = {'input_spec': dict(batch=1, height=800, width=1344, dynamic=False, min_side=32,
                             max_side=2048, max_batch=64)}


def test_tensorrt_profiles_follow_the_exported_range():
    profile = profile_shapes(DYNAMIC)
    assert profile['images'] == ((1, 3, 65, 65), (2, 3, 800, 1333), (8, 3, 2048, 2048))
    assert profile['img_sizes'] == ((1, 2), (2, 2), (8, 2))
    custom = profile_shapes(DYNAMIC, min_shape=(1, 320, 320), max_shape=(4, 1344, 1344))
    assert custom['images'][0] == (1, 3, 320, 320) and custom['images'][2] == (4, 3, 1344, 1344)
    assert profile_shapes(STATIC)['images'] == ((1, 3, 800, 1344),) * 3
    with pytest.raises(ValueError, match='min <= opt <= max'):
        profile_shapes(DYNAMIC, min_shape=(1, 900, 900))
    with pytest.raises(ValueError, match='leaves the exported range'):
        profile_shapes(DYNAMIC, max_shape=(8, 4096, 4096))
    with pytest.raises(ValueError, match='static shape'):
        profile_shapes(STATIC, max_shape=(2, 800, 1344))


def test_trtexec_command_names_both_inputs():
    cmd = trtexec_command('m.onnx', 'm.engine', profile_shapes(DYNAMIC), fp16=True)
    assert cmd[:3] == ['trtexec', '--onnx=m.onnx', '--saveEngine=m.engine']
    assert '--minShapes=images:1x3x65x65,img_sizes:1x2' in cmd
    assert '--maxShapes=images:8x3x2048x2048,img_sizes:8x2' in cmd and cmd[-1] == '--fp16'


def test_engine_script_prints_the_command_and_says_what_a_build_needs(exported, repo_root,
                                                                      tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'build_trt_engine', repo_root / 'tools/deployment/build_trt_engine.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    engine = tmp_path / 'k0.engine'
    argv = [str(exported['onnx']), '--engine', str(engine), '--opt-shape', '1', '160', '160']
    assert script.main(argv + ['--print-command']) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert '--optShapes=images:1x3x160x160,img_sizes:1x2' in printed
    if importlib.util.find_spec('tensorrt') is None:
        with pytest.raises(SystemExit, match='needs the tensorrt package and a CUDA GPU.*'
                                             'trtexec'):
            script.main(argv)
        assert not engine.exists()
