"""``DistSafeLoggerHook``: mmengine's LoggerHook with the test-metrics JSON written once."""
from __future__ import annotations

from mmengine.dist import is_main_process
from mmengine.hooks import LoggerHook

from codetr.registry import HOOKS


@HOOKS.register_module()
class DistSafeLoggerHook(LoggerHook):
    """``LoggerHook`` (same arguments) whose ``after_test_epoch`` runs on the main process only.

    mmengine 0.10.7 makes every rank write the test metrics to the same
    ``<timestamp>.json``; the ranks' records differ in length (their timings differ), so
    concurrent writes leave a corrupt file. The metrics are already gathered on every rank,
    so the main process alone logs and writes them.
    """

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        if is_main_process():
            super().after_test_epoch(runner, metrics)
