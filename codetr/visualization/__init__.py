"""Drawing boxes: a plain function, the Runner's visualizer and its hook."""
from .draw import class_color, draw_boxes
from .hooks import DetVisualizationHook
from .local_visualizer import DetLocalVisualizer

__all__ = ['DetLocalVisualizer', 'DetVisualizationHook', 'class_color', 'draw_boxes']
