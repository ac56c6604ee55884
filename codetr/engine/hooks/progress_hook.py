"""``EvalProgressHook``: a progress bar over the validation and test images."""
from __future__ import annotations

from mmengine.dist import get_world_size
from mmengine.hooks import Hook

from codetr.registry import HOOKS
from codetr.utils.progress import Progress


@HOOKS.register_module()
class EvalProgressHook(Hook):
    """Report how far validation / testing is, with the rate and an ETA.

    mmengine's loops log an iteration line every ``LoggerHook.interval`` iterations; this
    hook adds a bar on a terminal, or a line every ``interval`` seconds in a log file (see
    :class:`codetr.utils.progress.Progress`). Only rank 0 reports; it counts its own images
    times the number of processes. The default runtime config registers it as
    ``default_hooks.progress``; ``default_hooks.progress=None`` removes it.

    Args:
        interval: seconds between lines when the output is not a terminal.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._progress: Progress | None = None
        self._num_batches = 0

    def _start(self, loader, desc: str) -> None:
        self._num_batches = len(loader)
        self._progress = Progress(len(loader.dataset), desc, unit='images',
                                  interval=self.interval)

    def _step(self, batch_idx: int, data_batch: dict | None) -> None:
        if self._progress is None:
            return
        samples = (data_batch or {}).get('data_samples')
        per_rank = len(samples) if samples is not None else 1
        self._progress.update(per_rank * get_world_size())
        if batch_idx + 1 >= self._num_batches:  # end the bar before the metric's output
            self._finish()

    def _finish(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def before_val_epoch(self, runner) -> None:
        self._start(runner.val_dataloader, 'val')

    def before_test_epoch(self, runner) -> None:
        self._start(runner.test_dataloader, 'test')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._step(batch_idx, data_batch)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._step(batch_idx, data_batch)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish()
