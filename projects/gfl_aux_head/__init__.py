"""The GFL aux head plugin: importing this package registers ``CoGFLHead`` in codetr's
``MODELS`` (its configs name it in ``custom_imports``)."""
from .co_gfl_head import CoGFLHead, Integral

__all__ = ['CoGFLHead', 'Integral']
