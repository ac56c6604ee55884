"""codetr: a config-driven training framework for Co-DETR."""
from .version import __version__

__all__ = ['__version__']
