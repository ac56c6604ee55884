"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

The same command as ``codetr-test``; the implementation and the flags are in
:mod:`codetr.cli.test`. This clone's ``codetr`` is put first on ``sys.path``.
"""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from codetr.cli.test import build_cfg, cli, main, parse_args  # noqa: E402

__all__ = ['build_cfg', 'cli', 'main', 'parse_args']

if __name__ == '__main__':
    sys.exit(cli())
