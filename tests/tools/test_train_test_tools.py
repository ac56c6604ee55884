"""tools/train.py, tools/test.py and tools/misc/print_config.py: flags and end-to-end runs."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from codetr.registry import RUNNERS
from tests.engine.toy import toy_config, toy_config_text

from ..conftest import ROOT


def _load_tool(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + '_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = _load_tool('tools/train.py')
test_tool = _load_tool('tools/test.py')
print_config = _load_tool('tools/misc/print_config.py')


@pytest.fixture
def config(tmp_path):
    """A toy config whose work_dir is tmp_path/work, with auto_scale_lr like the schedules."""
    path = tmp_path / 'toy_1x.py'
    text = toy_config_text(str(tmp_path / 'work'), max_epochs=1)
    path.write_text(text + 'auto_scale_lr = dict(enable=False, base_batch_size=16)\n')
    return str(path)


def _train_cfg(*argv):
    return train_tool.build_cfg(train_tool.parse_args(list(argv)))


def _test_cfg(*argv):
    return test_tool.build_cfg(test_tool.parse_args(list(argv)))


def test_work_dir_precedence(config, tmp_path):
    assert _train_cfg(config).work_dir == str(tmp_path / 'work')
    assert _train_cfg(config, '--work-dir', 'elsewhere').work_dir == 'elsewhere'
    no_dir = tmp_path / 'no_dir.py'
    no_dir.write_text(open(config).read().replace(f"work_dir = '{tmp_path / 'work'}'", ''))
    assert _train_cfg(str(no_dir)).work_dir == os.path.join('./work_dirs', 'no_dir')


def test_resume_flag_forms(config):
    bare = _train_cfg(config, '--resume')
    assert bare.resume is True and bare.load_from is None
    explicit = _train_cfg(config, '--resume', 'a/epoch_3.pth')
    assert explicit.resume is True and explicit.load_from == 'a/epoch_3.pth'
    assert _train_cfg(config).get('resume', False) is False


def test_amp_auto_scale_lr_and_cfg_options(config):
    cfg = _train_cfg(config, '--amp', '--auto-scale-lr', '--cfg-options',
                     'train_cfg.max_epochs=5', 'model.nan_at_calls=[2]')
    expected = 'AmpOptimWrapper' if torch.cuda.is_available() else 'BFloat16OptimWrapper'
    assert cfg.optim_wrapper.type == expected
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    assert cfg.train_cfg.max_epochs == 5 and cfg.model.nan_at_calls == [2]


def test_auto_scale_lr_counts_gradient_accumulation(config):
    cfg = _train_cfg(config, '--auto-scale-lr', '--cfg-options',
                     'optim_wrapper.accumulative_counts=2')
    # mmengine's factor (processes x batch) / base then equals the accumulated batch's.
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=8)


def test_strategy_flag_selects_the_flexible_runner(config):
    cfg = _train_cfg(config, '--launcher', 'pytorch', '--strategy', 'fsdp')
    assert cfg.runner_type == 'CodetrFlexibleRunner'
    assert cfg.strategy.type == 'codetr.CodetrFSDPStrategy'
    with pytest.raises(SystemExit, match='needs a distributed launch'):
        _train_cfg(config, '--strategy', 'fsdp')


def test_auto_scale_lr_without_base_batch_size_is_explained(tmp_path):
    path = tmp_path / 'plain.py'
    path.write_text(toy_config_text(str(tmp_path / 'w')))
    with pytest.raises(SystemExit, match='--auto-scale-lr needs auto_scale_lr=dict'):
        _train_cfg(str(path), '--auto-scale-lr')


def test_plugins_import_from_the_working_directory(tmp_path, monkeypatch):
    """Python puts tools/, not the working directory, on sys.path: both tools add the working
    directory, so a plugin's ``custom_imports`` (``projects.NAME``) resolve from the root."""
    (tmp_path / 'my_plugins').mkdir()
    (tmp_path / 'my_plugins' / '__init__.py').write_text('')
    path = tmp_path / 'plugin_cfg.py'
    path.write_text(toy_config_text(str(tmp_path / 'w')) + "custom_imports = dict("
                    "imports=['my_plugins'], allow_failed_imports=False)\n")
    monkeypatch.chdir(tmp_path)
    for build in (lambda: _train_cfg(str(path)), lambda: _test_cfg(str(path), 'x.pth')):
        monkeypatch.setattr(sys, 'path', [p for p in sys.path if p not in ('', str(tmp_path))])
        monkeypatch.delitem(sys.modules, 'my_plugins', raising=False)
        assert build().custom_imports.imports == ['my_plugins']
        assert 'my_plugins' in sys.modules


def test_launcher_and_local_rank_spellings(config):
    for flag in ('--local-rank', '--local_rank'):
        assert train_tool.parse_args([config, flag, '3']).local_rank == 3
    cfg = _train_cfg(config, '--launcher', 'pytorch')
    assert cfg.launcher == 'pytorch'
    if not torch.cuda.is_available():
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg.type == 'codetr.CPUDistributedDataParallel'


def test_test_tool_loads_checkpoint_and_rejects_bad_out(config):
    cfg = _test_cfg(config, 'ckpt.pth')
    assert cfg.load_from == 'ckpt.pth' and cfg.resume is False
    with pytest.raises(SystemExit, match=r'--out results\.txt must end with one of \.pkl'):
        _test_cfg(config, 'ckpt.pth', '--out', 'results.txt')


def test_out_appends_dump_metric(config):
    if not hasattr(pytest.importorskip('codetr.evaluation'), 'DumpDetResults'):
        pytest.skip('DumpDetResults is not available')
    cfg = _test_cfg(config, 'ckpt.pth', '--out', 'res.pkl')
    assert cfg.test_evaluator == [dict(type='ToyMSEMetric'),
                                  dict(type='DumpDetResults', out_file_path='res.pkl')]


def test_tta_without_tta_config_is_explained(config):
    with pytest.raises(SystemExit, match='--tta needs tta_model and tta_pipeline'):
        _test_cfg(config, 'ckpt.pth', '--tta')


def test_tta_wraps_model_and_swaps_pipeline(config, tmp_path):
    path = tmp_path / 'tta.py'
    path.write_text(open(config).read() + "tta_model = dict(type='DetTTAModel')\n"
                    "tta_pipeline = [dict(type='TestTimeAug', transforms=[])]\n")
    cfg = _test_cfg(str(path), 'ckpt.pth', '--tta')
    assert cfg.model == dict(type='DetTTAModel', module=dict(type='ToyRegressor'))
    assert cfg.test_dataloader.dataset.pipeline == [dict(type='TestTimeAug', transforms=[])]


def test_show_dir_needs_the_visualization_hook(config, tmp_path):
    with pytest.raises(SystemExit, match="default_hooks.visualization=dict"):
        _test_cfg(config, 'ckpt.pth', '--show-dir', 'vis')
    path = tmp_path / 'vis.py'
    path.write_text(open(config).read().replace(
        "'logger': {", "'visualization': {'type': 'DetVisualizationHook'}, 'logger': {"))
    try:
        cfg = _test_cfg(str(path), 'ckpt.pth', '--show-dir', 'vis')
    except SystemExit as err:
        pytest.skip(str(err))  # codetr.visualization not importable here
    assert cfg.default_hooks.visualization == dict(type='DetVisualizationHook', draw=True,
                                                   test_out_dir='vis')


def test_print_config_applies_cfg_options(config, capsys):
    text = print_config.main([config, '--cfg-options', 'train_cfg.max_epochs=7'])
    assert "max_epochs=7" in text and text in capsys.readouterr().out


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_then_bare_resume_end_to_end(config, tmp_path):
    work = tmp_path / 'work'
    _run_tool('tools/train.py', config)
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    # Bare --resume continues from the work dir's last checkpoint to epoch 2.
    _run_tool('tools/train.py', config, '--resume', '--cfg-options', 'train_cfg.max_epochs=2')
    resumed = torch.load(work / 'epoch_2.pth')
    assert resumed['meta']['epoch'] == 2 and resumed['meta']['iter'] == 8


def test_test_tool_end_to_end(config, tmp_path):
    runner = RUNNERS.build(Config(toy_config(str(tmp_path / 'train'), max_epochs=1)))
    runner.train()
    expected = runner.test()
    result = _run_tool('tools/test.py', config, str(tmp_path / 'train' / 'epoch_1.pth'),
                       '--work-dir', str(tmp_path / 'test'),
                       '--cfg-options', 'default_hooks.progress.type=EvalProgressHook')
    assert 'test: 8/8 images [' in result.stderr  # the default runtime's progress hook
    log = next((tmp_path / 'test').glob('*/*.json'))
    metrics = json.loads(log.read_text().strip().splitlines()[-1])
    assert metrics['toy/count'] == 8.0
    assert metrics['toy/mse'] == pytest.approx(expected['toy/mse'], rel=1e-6, abs=0)
