"""codetr.cli: short config names, custom_imports from the working directory, the scripts
as wrappers, and no use of pkg_resources (gone from setuptools >= 81) on codetr's paths."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from codetr.cli import browse, infer, test, train
from codetr.cli.utils import add_cwd_to_sys_path, load_config
from codetr.utils import list_configs

from ..conftest import ROOT

QUICKSTART = 'co_dino_r18_k2_quickstart_synthetic'


def _load_script(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + '_script', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('script, command', [
    ('tools/train.py', train), ('tools/test.py', test), ('demo/image_demo.py', infer),
    ('tools/analysis_tools/browse_dataset.py', browse)])
def test_scripts_are_wrappers_of_the_commands(script, command):
    module = _load_script(script)
    assert module.main is command.main and module.parse_args is command.parse_args


def test_train_and_test_take_short_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = train.build_cfg(train.parse_args([QUICKSTART]))
    assert cfg.filename == str(ROOT / 'configs' / 'quickstart' / f'{QUICKSTART}.py')
    assert cfg.work_dir == f'./work_dirs/{QUICKSTART}'
    cfg = test.build_cfg(test.parse_args([f'quickstart/{QUICKSTART}.py', 'ckpt.pth']))
    assert cfg.load_from == 'ckpt.pth' and cfg.model.query_head.num_queries == 30


def test_print_config_takes_short_names(capsys):
    text = _load_script('tools/misc/print_config.py').main(['schedule_3x'])  # _base_/schedules
    assert 'max_epochs=36' in text and text in capsys.readouterr().out


def test_unknown_config_exits_with_the_closest_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r'error: Config .* Did you mean: '
                                         r'quickstart/co_dino_r18_k2_quickstart_synthetic\.py'):
        train.build_cfg(train.parse_args(['co_dino_r18_k2_quickstart_synthetc']))
    with pytest.raises(SystemExit, match='error: Config .*nope'):
        infer.main(['img.png', 'nope'])


def _plugin_project(root):
    """``root/projects/demo_plugin/marker.py`` and a config importing it."""
    package = root / 'projects' / 'demo_plugin'
    package.mkdir(parents=True)
    (root / 'projects' / '__init__.py').write_text('')
    (package / '__init__.py').write_text('')
    (package / 'marker.py').write_text('LOADED = True\n')
    config = root / 'plugin_cfg.py'
    config.write_text("custom_imports = dict(imports=['projects.demo_plugin.marker'], "
                      "allow_failed_imports=False)\nx = 1\n")
    return config


@pytest.fixture
def isolated_imports(tmp_path, monkeypatch):
    """sys.path without the repository or the current directory, and no `projects`
    modules imported, so that only the working directory can provide them."""
    kept = [p for p in sys.path if p not in ('', '.', str(ROOT), str(tmp_path))]
    monkeypatch.setattr(sys, 'path', kept)
    for name in [m for m in sys.modules if m == 'projects' or m.startswith('projects.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [m for m in sys.modules if m == 'projects' or m.startswith('projects.')]:
        del sys.modules[name]


def test_custom_imports_of_projects_in_the_working_directory(isolated_imports):
    config = _plugin_project(isolated_imports)
    from mmengine.config import Config
    with pytest.raises(ImportError, match='projects'):  # what MMDetection users hit
        Config.fromfile(str(config))
    cfg = load_config('plugin_cfg.py', 'codetr-train')
    assert cfg.x == 1 and sys.modules['projects.demo_plugin.marker'].LOADED
    assert sys.path[-1] == str(isolated_imports)  # appended: never shadows a package
    add_cwd_to_sys_path()
    assert sys.path.count(str(isolated_imports)) == 1


def test_codetr_paths_do_not_need_pkg_resources(tmp_path, monkeypatch):
    """setuptools >= 81 has no pkg_resources; mmengine 0.10 imports it only for `pkg::`
    config paths, read_base() imports and mmengine.hub. No shipped config uses the first
    two, and the commands build their configs with the module made unimportable (the
    wheel test trains and evaluates that way)."""
    for relative in list_configs():
        text = (ROOT / 'configs' / relative).read_text()
        assert '::' not in text and 'read_base' not in text, relative
    monkeypatch.setitem(sys.modules, 'pkg_resources', None)
    with pytest.raises(ImportError):
        import pkg_resources  # noqa: F401
    monkeypatch.chdir(tmp_path)
    cfg = train.build_cfg(train.parse_args([QUICKSTART, '--amp']))
    assert cfg.optim_wrapper.type in ('BFloat16OptimWrapper', 'AmpOptimWrapper')
    cfg = test.build_cfg(test.parse_args(['co_dino_5scale_r50_lsj_8xb2_1x_coco', 'c.pth']))
    assert cfg.model.data_preprocessor.batch_augments[0].type == 'BatchFixedSizePad'
