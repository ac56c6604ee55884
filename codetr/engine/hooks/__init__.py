from .checkpoint_hook import AtomicCheckpointHook
from .logger_hook import DistSafeLoggerHook
from .nonfinite_loss import NonFiniteLossHook, describe_nonfinite
from .progress_hook import EvalProgressHook

__all__ = ['AtomicCheckpointHook', 'DistSafeLoggerHook', 'EvalProgressHook', 'NonFiniteLossHook',
           'describe_nonfinite']
