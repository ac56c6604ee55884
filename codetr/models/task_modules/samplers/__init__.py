"""Samplers: which assigned priors enter the loss."""
from .random_sampler import PseudoSampler, RandomSampler
from .sampling_result import SamplingResult

__all__ = ['PseudoSampler', 'RandomSampler', 'SamplingResult']
