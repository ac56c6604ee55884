"""One dynamic-shape export of the quick-start Co-DINO (ONNX and .pt2 from one trace), shared
by every deployment test of the session: tracing and translating cost ~20 s of CPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from codetr.apis import build_test_pipeline
from codetr.apis.inference import pack_images
from codetr.datasets.synthetic import make_synthetic_dataset
from codetr.deployment.export import InputSpec, export_model

from .helpers import QUICKSTART_K0, build_model


@pytest.fixture(scope='session')
def quickstart_model():
    return build_model(QUICKSTART_K0)


@pytest.fixture(scope='session')
def exported(quickstart_model, tmp_path_factory) -> dict[str, Path]:
    """``{'onnx': path, 'torch_export': path}`` of a graph with symbolic batch, H and W."""
    out = tmp_path_factory.mktemp('exported')
    paths = {'onnx': out / 'k0.onnx', 'torch_export': out / 'k0.pt2'}
    spec = InputSpec(batch=2, height=160, width=160, dynamic=True, max_side=512)
    export_model(quickstart_model, paths, spec)
    return paths


@pytest.fixture(scope='session')
def synthetic_val(tmp_path_factory) -> Path:
    """Four synthetic val images of 96..160 px (the quick-start data, smaller)."""
    root = tmp_path_factory.mktemp('synthetic')
    make_synthetic_dataset(root, num_train=0, num_val=4, seed=3, min_size=96, max_size=160)
    return root / 'val'


@pytest.fixture(scope='session')
def synthetic_batches(quickstart_model, synthetic_val) -> list[dict]:
    """Packed batches of 1 and 3 images: two different padded sizes and batch sizes."""
    pipeline = build_test_pipeline(quickstart_model.cfg, from_array=False)
    images = sorted(str(p) for p in synthetic_val.iterdir())
    return [pack_images(pipeline, images[:1]), pack_images(pipeline, images[1:])]
