"""Progress of long jobs: a bar on a terminal, a line with rate and ETA in a log file.

Every long loop of codetr reports through :class:`Progress` (or :func:`track`): evaluation
(the ``EvalProgressHook`` of the default runtime), COCO / LVIS metric computation, dataset
conversion, ``browse_dataset``, ``DetInferencer`` over many images and the benchmarks.

- On a terminal the bar is redrawn in place (at most 10 times a second)::

      val: 37/64 images [################............]  58% 12.3 images/s, 3s, ETA 2s

- Elsewhere (a log file, a pipe, a test's captured output) the same text is written as a
  line every ``interval`` seconds and once at the end, so logs stay short.
- Only the process of rank 0 reports: a distributed job writes one bar, not one per rank.
- ``CODETR_PROGRESS=0`` in the environment turns every report off.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar('T')

BAR_WIDTH = 28
TTY_REFRESH_S = 0.1
LOG_INTERVAL_S = 10.0


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f'{seconds}s'
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def progress_enabled() -> bool:
    """False on ranks other than 0 and when ``CODETR_PROGRESS=0``."""
    if os.environ.get('CODETR_PROGRESS', '1').lower() in ('0', 'false', 'off', 'no'):
        return False
    from mmengine.dist import get_rank
    return get_rank() == 0


class Progress:
    """Count ``total`` steps of a job named ``desc`` and report the rate and the ETA.

    Args:
        total: number of steps, or None when unknown (then no bar and no ETA).
        desc: what is running, printed first (``'val'``, ``'yolo2coco'``).
        unit: what a step is (``'images'``, ``'it'``).
        file: where to write; standard error by default.
        interval: seconds between lines when ``file`` is not a terminal.
        enabled: force reporting on or off; by default :func:`progress_enabled`.
    """

    def __init__(self, total: int | None, desc: str, unit: str = 'it', file: IO | None = None,
                 interval: float = LOG_INTERVAL_S, enabled: bool | None = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = sys.stderr if file is None else file
        self.interval = interval
        self.enabled = progress_enabled() if enabled is None else enabled
        isatty = getattr(self.file, 'isatty', None)
        self.tty = bool(isatty and isatty())
        self.count = 0
        self.closed = False
        self.start = time.perf_counter()
        self._last_write = self.start

    def text(self, now: float | None = None) -> str:
        """The report line (without a line break) for the current count."""
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.count / elapsed
        parts = [f'{self.desc}: {self.count}' + (f'/{self.total}' if self.total else '')
                 + f' {self.unit}']
        if self.total:
            fraction = min(self.count / self.total, 1.0)
            filled = int(BAR_WIDTH * fraction)
            parts.append(f'[{"#" * filled}{"." * (BAR_WIDTH - filled)}] {fraction:4.0%}')
        timing = f'{rate:.3g} {self.unit}/s, {format_seconds(elapsed)}'
        if self.total and not self.closed and 0 < self.count < self.total:
            timing += f', ETA {format_seconds((self.total - self.count) / rate)}'
        parts.append(timing)
        return ' '.join(parts)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps (clamped to ``total``) and report if it is time to."""
        self.count = self.count + n if not self.total else min(self.count + n, self.total)
        if not self.enabled or self.closed:
            return
        now = time.perf_counter()
        if now - self._last_write >= (TTY_REFRESH_S if self.tty else self.interval):
            self._write(now)

    def _write(self, now: float) -> None:
        self._last_write = now
        if self.tty:
            self.file.write(f'\r{self.text(now)}\x1b[K')
        else:
            self.file.write(self.text(now) + '\n')
        self.file.flush()

    def close(self) -> None:
        """Write the final report (once) and end the line."""
        if self.closed:
            return
        self.closed = True
        if self.enabled:
            self._write(time.perf_counter())
            if self.tty:
                self.file.write('\n')
                self.file.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = 'it',
          file: IO | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Yield ``items`` while reporting their progress (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, '__len__'):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit=unit, file=file, enabled=enabled) as progress:
        for item in items:
            yield item
            progress.update()
