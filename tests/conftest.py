"""Shared test set-up: the codetr default scope and small helpers."""
from pathlib import Path

import pytest

from codetr.utils import register_all_modules

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'

register_all_modules()


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f'{SHARED} is not present')
    return SHARED
