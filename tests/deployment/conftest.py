"""One dynamic-shape trace of the quick-start Co-DINO, written as ONNX, shared by every
deployment test of the session (tracing and translating cost ~20 s of CPU); the .pt2 is
written from the same program when a test asks for it."""
from __future__ import annotations

from pathlib import Path

import pytest

from codetr.apis import build_test_pipeline
from codetr.apis.inference import pack_images
from codetr.datasets.synthetic import make_synthetic_dataset
from codetr.deployment.export import (
    InputSpec,
    build_metadata,
    min_input_side,
    save_onnx,
    save_program,
    trace,
)
from codetr.deployment.graph import DetrGraph

from .helpers import QUICKSTART_K0, build_model


@pytest.fixture(scope='session')
def quickstart_model():
    return build_model(QUICKSTART_K0)


@pytest.fixture(scope='session')
def traced(quickstart_model) -> dict:
    """The ExportedProgram (symbolic batch, height and width) and its graph and spec."""
    graph = DetrGraph(quickstart_model)
    spec = InputSpec(batch=2, height=160, width=160, dynamic=True, max_side=512,
                     min_side=min_input_side(graph, 512))
    return dict(program=trace(graph, spec), graph=graph, spec=spec)


def _metadata(model, traced: dict, fmt: str) -> dict:
    return build_metadata(model, traced['graph'], traced['spec'], fmt, 18, False)


@pytest.fixture(scope='session')
def exported(quickstart_model, traced, tmp_path_factory) -> dict[str, Path]:
    """``{'onnx': path}`` of the traced program."""
    path = tmp_path_factory.mktemp('exported') / 'k0.onnx'
    save_onnx(traced['program'], path, _metadata(quickstart_model, traced, 'onnx'))
    return {'onnx': path}


@pytest.fixture(scope='session')
def saved_program(quickstart_model, traced, tmp_path_factory) -> Path:
    """The traced program saved with torch.export.save (a .pt2)."""
    path = tmp_path_factory.mktemp('exported') / 'k0.pt2'
    save_program(traced['program'], path, _metadata(quickstart_model, traced, 'torch_export'))
    return path


@pytest.fixture(scope='session')
def synthetic_val(tmp_path_factory) -> Path:
    """Three synthetic val images of 96..160 px (the quick-start data, smaller)."""
    root = tmp_path_factory.mktemp('synthetic')
    make_synthetic_dataset(root, num_train=0, num_val=3, seed=3, min_size=96, max_size=160)
    return root / 'val'


@pytest.fixture(scope='session')
def synthetic_batches(quickstart_model, synthetic_val) -> list[dict]:
    """Packed batches of 1 and 2 images: two different padded sizes and batch sizes."""
    pipeline = build_test_pipeline(quickstart_model.cfg, from_array=False)
    images = sorted(str(p) for p in synthetic_val.iterdir())
    return [pack_images(pipeline, images[:1]), pack_images(pipeline, images[1:])]
