"""Prior generators: anchors (anchor-based heads) and grid points (anchor-free heads)."""
from .anchor_generator import AnchorGenerator
from .point_generator import MlvlPointGenerator

__all__ = ['AnchorGenerator', 'MlvlPointGenerator']
