from .checkpoint_hook import AtomicCheckpointHook
from .nonfinite_loss import NonFiniteLossHook, describe_nonfinite

__all__ = ['AtomicCheckpointHook', 'NonFiniteLossHook', 'describe_nonfinite']
