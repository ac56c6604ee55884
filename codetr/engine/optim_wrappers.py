"""``BFloat16OptimWrapper``: mixed precision where mmengine's AmpOptimWrapper cannot run.

mmengine's ``AmpOptimWrapper`` asserts a CUDA/NPU/MLU device, so ``tools/train.py --amp``
on a CPU-only machine uses this wrapper instead: the forward pass runs under
``torch.autocast(dtype=torch.bfloat16)`` on the current device. bfloat16 keeps float32's
exponent range, so no loss scaling is needed (and none is done); parameters, gradients
and optimizer state stay float32.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from mmengine.device import get_device
from mmengine.optim import OptimWrapper
from torch import nn

from codetr.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BFloat16OptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose ``optim_context`` adds bfloat16 autocast (same arguments)."""

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        # get_device() is 'cpu' or the accelerator type, the device_type autocast expects.
        with super().optim_context(model), torch.autocast(device_type=get_device(),
                                                           dtype=torch.bfloat16):
            yield
