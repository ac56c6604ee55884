# mmcv registers its generic transforms (RandomResize, RandomChoiceResize, RandomChoice, ...)
# in mmengine's root registry, which codetr's TRANSFORMS inherits from.
import mmcv.transforms  # noqa: F401
