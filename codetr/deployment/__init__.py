"""Export of the detectors' inference path (ONNX, torch.export) and runtimes for the result.

Nothing under ``codetr.models`` imports this package (DESIGN.md section 7): it takes a built
model and traces its ``eval_module='detr'`` path.
"""
from .checks import ExportError, check_exportable
from .graph import INPUT_NAMES, OUTPUT_NAMES, DetrGraph
from .msda import ExportableMSDA, ms_deform_attn_grid_sample, swap_deformable_attention

__all__ = ['INPUT_NAMES', 'OUTPUT_NAMES', 'DetrGraph', 'ExportError', 'ExportableMSDA',
           'check_exportable', 'ms_deform_attn_grid_sample', 'swap_deformable_attention']
