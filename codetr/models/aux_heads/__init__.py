from .co_fcos_head import CoFCOSHead  # noqa: F401
