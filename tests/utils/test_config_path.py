"""resolve_config: an existing path wins, then a path under configs/, then a short name."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

from codetr.utils import (
    AmbiguousConfigError,
    ConfigNotFoundError,
    configs_root,
    list_configs,
    resolve_config,
)

from ..conftest import ROOT

CONFIGS = ROOT / 'configs'
CO_DINO = CONFIGS / 'co_dino' / 'co_dino_5scale_r50_8xb2_1x_coco.py'


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """Run from a directory outside the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_clone_resolves_against_its_own_configs_folder():
    assert configs_root() == CONFIGS
    assert 'co_dino/co_dino_5scale_r50_8xb2_1x_coco.py' in list_configs()
    assert '_base_/default_runtime.py' in list_configs()


def test_path_under_configs_with_or_without_prefix_and_suffix(elsewhere):
    for name in ('co_dino/co_dino_5scale_r50_8xb2_1x_coco.py',
                 'configs/co_dino/co_dino_5scale_r50_8xb2_1x_coco.py',
                 'co_dino/co_dino_5scale_r50_8xb2_1x_coco'):
        assert resolve_config(name) == str(CO_DINO), name


def test_short_name_is_found_in_a_sub_folder_and_inherits_its_bases(elsewhere):
    for name in ('co_dino_5scale_r50_8xb2_1x_coco', 'co_dino_5scale_r50_8xb2_1x_coco.py'):
        assert resolve_config(name) == str(CO_DINO)
    cfg = Config.fromfile(resolve_config('co_dino_5scale_r50_8xb2_1x_coco'))
    assert sorted(cfg.model.aux_heads) == ['atss', 'rcnn']  # from _base_/models/
    assert cfg.train_cfg.max_epochs == 12  # from _base_/schedules/


def test_an_existing_file_wins_over_a_config_of_the_same_name(elsewhere):
    local = elsewhere / 'co_dino_5scale_r50_8xb2_1x_coco.py'
    local.write_text('x = 1\n')
    assert resolve_config(local.name) == local.name  # relative to the working directory
    assert resolve_config(str(local)) == str(local)
    # Without the suffix the name is not a file here: the shipped config is meant.
    assert resolve_config('co_dino_5scale_r50_8xb2_1x_coco') == str(CO_DINO)


def test_ambiguous_short_name_lists_every_candidate(tmp_path):
    for folder in ('a', 'b/deeper'):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / 'same.py').write_text('x = 1\n')
    with pytest.raises(AmbiguousConfigError, match=r"'same' matches 2 configs .*: "
                                                   r'a/same\.py, b/deeper/same\.py'):
        resolve_config('same', root=tmp_path)
    assert resolve_config('a/same.py', root=tmp_path) == str(tmp_path / 'a' / 'same.py')


def test_unknown_names_get_the_closest_configs(elsewhere):
    with pytest.raises(ConfigNotFoundError, match=r'Did you mean: '
                                                  r'co_dino/co_dino_5scale_r50_8xb2_1x_coco\.py'):
        resolve_config('co_dino_5scale_r50_8xb2_1x_cocoo')
    with pytest.raises(ConfigNotFoundError, match=r'not a file, nor a config under .*configs.*'
                                                  r'Did you mean: co_dino/co_dino_5scale_r50'):
        resolve_config('co_dino/co_dino_5scale_r50_8xb2_1x_coc.py')
    with pytest.raises(ConfigNotFoundError, match=r"'zzz' is not a file.* \d+ configs are there"):
        resolve_config('zzz')


def test_a_path_in_the_wrong_folder_is_not_silently_replaced(elsewhere):
    """Only a bare name is searched for: an explicit folder that does not hold the file is
    an error (naming the right place), not a different file."""
    with pytest.raises(ConfigNotFoundError, match=r'Did you mean: co_dino/co_dino_5scale'):
        resolve_config('quickstart/co_dino_5scale_r50_8xb2_1x_coco.py')


def test_every_shipped_config_is_reachable_by_its_short_name():
    for relative in list_configs():
        stem = Path(relative).stem
        try:
            assert resolve_config(stem) == str(CONFIGS / relative)
        except AmbiguousConfigError as err:  # then the error names this file
            assert relative in str(err)
