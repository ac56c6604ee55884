from .checkpoint_hook import AtomicCheckpointHook
from .logger_hook import DistSafeLoggerHook
from .nonfinite_loss import NonFiniteLossHook, describe_nonfinite

__all__ = ['AtomicCheckpointHook', 'DistSafeLoggerHook', 'NonFiniteLossHook', 'describe_nonfinite']
