"""Export a detector's inference graph: ``python tools/deployment/export_onnx.py CONFIG CKPT
--out model.onnx [--format onnx|torch_export] [--opset N] [--dynamic-shape] [--batch N]
[--shape H W] [--fp16] [--verify [--verify-images IMGS]] [--force]``.

The logic lives in :mod:`codetr.deployment.commands`; see README "Deploy".
"""
import sys

from codetr.deployment.commands import export_main

if __name__ == '__main__':
    sys.exit(export_main())
