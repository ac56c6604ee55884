"""Drawing boxes and masks: plain functions, the Runner's visualizer and its hook."""
from .draw import class_color, draw_boxes, draw_instances, draw_masks
from .hooks import DetVisualizationHook
from .local_visualizer import DetLocalVisualizer

__all__ = ['DetLocalVisualizer', 'DetVisualizationHook', 'class_color', 'draw_boxes',
           'draw_instances', 'draw_masks']
