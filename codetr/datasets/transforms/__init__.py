# mmcv registers its generic transforms (RandomResize, RandomChoiceResize, RandomChoice, ...)
# in mmengine's root registry, which codetr's TRANSFORMS inherits from.
import mmcv.transforms  # noqa: F401

from .copy_paste import CopyPaste
from .crop import FilterAnnotations, RandomCrop
from .formatting import PackDetInputs
from .geometric import RandomFlip, Resize
from .loading import LoadAnnotations, LoadImageFromFile
from .padding import Pad

__all__ = ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip', 'RandomCrop',
           'FilterAnnotations', 'Pad', 'PackDetInputs', 'CopyPaste']
