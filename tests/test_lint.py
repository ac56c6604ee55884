"""ruff (line length 100, rules in pyproject.toml) is part of the suite."""
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

TARGETS = [p for p in ('codetr', 'tools', 'tests', 'configs', 'benchmarks', 'projects', 'demo',
                       'setup.py') if (ROOT / p).exists()]


def test_ruff_clean():
    ruff = shutil.which('ruff') or shutil.which('ruff', path=str(ROOT / '.venv' / 'bin'))
    cmd = [ruff] if ruff else [sys.executable, '-m', 'ruff']
    if not ruff:
        pytest.importorskip('ruff')
    result = subprocess.run(cmd + ['check', *TARGETS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
