"""``NonFiniteLossHook``: stop (or skip a few steps) when the loss is NaN or infinite.

A NaN loss left alone poisons every parameter through one optimizer step and the run
carries on printing ``nan`` until someone notices. This hook guards the optimizer step:

1. ``before_train`` wraps ``update_params`` of the run's optim wrapper(s). After the
   backward pass it checks the total loss with one ``isfinite`` (one device sync per
   iteration; the total is the sum of the loss terms from ``parse_losses``, so it is finite
   exactly when every term is). In a distributed run the flag is all-reduced so every rank
   takes the same decision. A non-finite step is skipped: gradients are zeroed, no update.
2. ``after_train_iter`` receives the iteration's ``log_vars`` (every loss term); for a
   skipped step it names the non-finite terms and either logs the skip or, once more than
   ``max_nonfinite_skips`` steps have been skipped, raises::

       RuntimeError: iteration 7: non-finite loss terms: loss_bbox=nan, loss=nan ...
"""
from __future__ import annotations

import functools
import math

import torch
import torch.distributed as torch_dist
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict

from codetr.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Fail on a non-finite loss, optionally after skipping up to ``max_nonfinite_skips`` steps.

    Args:
        max_nonfinite_skips: how many non-finite iterations may be skipped (no parameter
            update, a warning in the log) over the whole run before training stops with
            an error. 0 (default) stops at the first one.
    """

    priority = 'VERY_HIGH'  # report before other hooks log or save NaN state

    def __init__(self, max_nonfinite_skips: int = 0):
        if max_nonfinite_skips < 0:
            raise ValueError(f'max_nonfinite_skips must be >= 0, got {max_nonfinite_skips}')
        self.max_nonfinite_skips = max_nonfinite_skips
        self.num_skipped = 0
        self._step_skipped = False

    def before_train(self, runner) -> None:
        wrappers = runner.optim_wrapper
        if isinstance(wrappers, OptimWrapperDict):
            wrappers = list(wrappers.optim_wrappers.values())
        for wrapper in wrappers if isinstance(wrappers, list) else [wrappers]:
            if not getattr(wrapper, '_codetr_nonfinite_guard', False):
                self._guard(wrapper)

    def _guard(self, wrapper: OptimWrapper) -> None:
        """Replace ``wrapper.update_params`` (on this instance) by a checked version."""

        @functools.wraps(wrapper.update_params)
        def update_params(loss: torch.Tensor, step_kwargs: dict | None = None,
                          zero_kwargs: dict | None = None) -> None:
            # Backward runs even for a bad loss: DDP ranks must all join its all-reduce.
            wrapper.backward(wrapper.scale_loss(loss))
            if not _all_ranks_finite(loss):
                self._step_skipped = True
                wrapper.zero_grad(**(zero_kwargs or {}))
                return
            if wrapper.should_update():
                wrapper.step(**(step_kwargs or {}))
                wrapper.zero_grad(**(zero_kwargs or {}))

        wrapper.update_params = update_params
        wrapper._codetr_nonfinite_guard = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._step_skipped:
            return
        self._step_skipped = False
        self.num_skipped += 1
        message = (f'iteration {runner.iter + 1}: non-finite loss terms: '
                   f'{describe_nonfinite(outputs or {})}')
        if self.num_skipped > self.max_nonfinite_skips:
            raise RuntimeError(
                f'{message}. Training stopped after {self.num_skipped} non-finite '
                f'iteration(s) (NonFiniteLossHook.max_nonfinite_skips='
                f'{self.max_nonfinite_skips}); lower the learning rate, check the '
                f'annotations, or raise max_nonfinite_skips to skip such steps.')
        runner.logger.warning(f'{message}; step skipped ({self.num_skipped}/'
                              f'{self.max_nonfinite_skips} allowed)')


def _all_ranks_finite(loss: torch.Tensor) -> bool:
    """``isfinite(loss)`` agreed over all ranks: one sync, plus one all-reduce when distributed."""
    bad = (~torch.isfinite(loss.detach())).any().float()
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
    return not bool(bad)


def describe_nonfinite(log_vars: dict) -> str:
    """``'loss_bbox=nan, loss=nan'`` for the non-finite entries of ``log_vars``.

    Off the hot path (only after a skipped step), so per-term ``float`` syncs are fine.
    """
    bad = []
    for name, value in log_vars.items():
        value = float(value.detach().float().mean()) if torch.is_tensor(value) else value
        if isinstance(value, float) and not math.isfinite(value):
            bad.append(f'{name}={value}')
    # In a distributed run the skip may come from another rank's loss.
    return ', '.join(bad) or 'none on this rank (another rank reported a non-finite loss)'
