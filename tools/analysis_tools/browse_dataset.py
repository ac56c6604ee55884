"""Draw a dataset's ground truth AFTER its pipeline, one PNG per sample.

    python tools/analysis_tools/browse_dataset.py CONFIG --output-dir work_dirs/browse

The same command as ``codetr-browse``; the implementation and the flags are in
:mod:`codetr.cli.browse`. This clone's ``codetr`` is put first on ``sys.path``.
"""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from codetr.cli.browse import browse, build_dataset, draw_sample, main, parse_args  # noqa: E402

__all__ = ['browse', 'build_dataset', 'draw_sample', 'main', 'parse_args']

if __name__ == '__main__':
    sys.exit(main())
