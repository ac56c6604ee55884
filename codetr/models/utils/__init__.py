"""Helpers shared by the model code that are not modules themselves."""
from .precision import at_least_float32, autocast_disabled, float32_inputs, to_float32

__all__ = ['at_least_float32', 'autocast_disabled', 'float32_inputs', 'to_float32']
