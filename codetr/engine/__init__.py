"""Training machinery: the Runner, hooks, checkpoint safety and CPU-capable distribution.

Importing this package allow-lists the objects mmengine checkpoints contain for
``torch.load(weights_only=True)`` (see :mod:`codetr.engine.checkpoint`).
"""
from .checkpoint import (
                         SAFE_GLOBALS,
                         CheckpointError,
                         allow_mmengine_checkpoint_types,
                         atomic_save,
                         load_checkpoint,
)
from .distributed import CPUDistributedDataParallel, adapt_cfg_to_device, shutdown_distributed
from .hooks import AtomicCheckpointHook, NonFiniteLossHook
from .layer_decay import LayerDecayOptimWrapperConstructor
from .optim_wrappers import BFloat16OptimWrapper
from .runner import CodetrFlexibleRunner, CodetrRunner
from .strategies import (
                         CodetrDDPStrategy,
                         CodetrFSDPStrategy,
                         configure_strategy,
                         layer_wrap_policy,
)

allow_mmengine_checkpoint_types()

__all__ = ['SAFE_GLOBALS', 'AtomicCheckpointHook', 'BFloat16OptimWrapper',
           'CPUDistributedDataParallel', 'CheckpointError', 'CodetrDDPStrategy',
           'CodetrFSDPStrategy', 'CodetrFlexibleRunner', 'CodetrRunner',
           'LayerDecayOptimWrapperConstructor', 'NonFiniteLossHook',
           'adapt_cfg_to_device', 'allow_mmengine_checkpoint_types', 'atomic_save',
           'configure_strategy', 'layer_wrap_policy', 'load_checkpoint', 'shutdown_distributed']
