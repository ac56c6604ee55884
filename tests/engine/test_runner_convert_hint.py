"""``load_from_convert='official'`` in a config adds the official-checkpoint converter hook."""
import pytest
from mmengine.config import Config

from codetr.engine.runner import CodetrRunner
from codetr.models.converters.hook import OfficialCheckpointHook
from codetr.registry import RUNNERS

from .toy import toy_config


def _hooks(runner) -> list:
    return [h for h in runner.hooks if isinstance(h, OfficialCheckpointHook)]


def test_convert_hint_adds_the_hook_once(tmp_path):
    cfg = Config(toy_config(str(tmp_path), load_from_convert='official'))
    runner = RUNNERS.build(cfg)
    assert isinstance(runner, CodetrRunner) and len(_hooks(runner)) == 1
    cfg = Config(toy_config(str(tmp_path / 'b'), load_from_convert='official',
                            custom_hooks=[dict(type='OfficialCheckpointHook', strict=False)]))
    hooks = _hooks(RUNNERS.build(cfg))
    assert len(hooks) == 1 and hooks[0].strict is False


def test_without_hint_no_hook_and_unknown_hint_is_refused(tmp_path):
    assert _hooks(RUNNERS.build(Config(toy_config(str(tmp_path))))) == []
    with pytest.raises(ValueError, match="load_from_convert='sensex'"):
        RUNNERS.build(Config(toy_config(str(tmp_path / 'c'), load_from_convert='sensex')))
