"""Export of the detectors' inference path (ONNX, torch.export) and runtimes for the result.

Nothing under ``codetr.models`` imports this package (DESIGN.md section 7): it takes a built
model and traces its ``eval_module='detr'`` path. ONNX needs the ``export`` extra
(``requirements/export.txt``); it is imported only where used.
"""
from .checks import ExportError, check_exportable
from .export import InputSpec, export_model, read_metadata
from .graph import INPUT_NAMES, OUTPUT_NAMES, DetrGraph
from .msda import ExportableMSDA, ms_deform_attn_grid_sample, swap_deformable_attention
from .runtime import OnnxDetector, ProgramDetector, load_deployed
from .verify import ParityReport, compare_detections

__all__ = ['INPUT_NAMES', 'OUTPUT_NAMES', 'DetrGraph', 'ExportError', 'ExportableMSDA',
           'InputSpec', 'OnnxDetector', 'ParityReport', 'ProgramDetector', 'check_exportable',
           'compare_detections', 'export_model', 'load_deployed', 'ms_deform_attn_grid_sample',
           'read_metadata', 'swap_deformable_attention']
