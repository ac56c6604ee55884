"""``MultiImageMixDataset``: a dataset wrapper for transforms that mix several images.

mmengine ships ``ConcatDataset``, ``RepeatDataset`` and ``ClassBalancedDataset`` but not
this one, which MMDetection's mixing transforms (``CopyPaste``, and Mosaic / MixUp in
MMDetection) need: the wrapped dataset loads and augments each image on its own (its
``pipeline`` stops before packing), then the wrapper's ``pipeline`` runs on one image, and
every transform with a ``get_indexes(dataset)`` method receives the other images it asks
for in ``results['mix_results']``. Behaviour and arguments are MMDetection's.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from codetr.registry import DATASETS, TRANSFORMS


@DATASETS.register_module()
class MultiImageMixDataset:
    """Run mixing transforms over images of the wrapped dataset.

    Args:
        dataset: the dataset (or its config), whose pipeline loads and augments single
            images and returns the results dict (no ``PackDetInputs``).
        pipeline: the transforms run on each item, ending with ``PackDetInputs``.
        skip_type_keys: transform type names to skip (e.g. to turn CopyPaste off for the
            last epochs).
        max_refetch: attempts to draw mix images the dataset can load, and to run a
            transform that returns None, before giving up.
        lazy_init: defer loading the wrapped dataset's annotations.
    """

    def __init__(self, dataset: dict | Any, pipeline: Sequence[dict | Any],
                 skip_type_keys: Sequence[str] | None = None, max_refetch: int = 15,
                 lazy_init: bool = False) -> None:
        if not isinstance(pipeline, Sequence):
            raise TypeError('MultiImageMixDataset.pipeline must be a list of transforms.')
        self.pipeline = []
        self.pipeline_types = []
        for transform in pipeline:
            if isinstance(transform, dict):
                self.pipeline_types.append(transform['type'])
                transform = TRANSFORMS.build(transform)
            elif callable(transform):
                self.pipeline_types.append(type(transform).__name__)
            else:
                raise TypeError(f'pipeline entries are transform configs or callables, got '
                                f'{type(transform).__name__}.')
            self.pipeline.append(transform)
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self._skip_type_keys = None
        self.update_skip_type_keys(skip_type_keys)
        self.max_refetch = max_refetch
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's metainfo (classes, palette)."""
        return copy.deepcopy(self.dataset.metainfo)

    def full_init(self) -> None:
        """Load the wrapped dataset's annotations."""
        if self._fully_initialized:
            return
        self.dataset.full_init()
        self._fully_initialized = True

    def get_data_info(self, idx: int) -> dict:
        """The wrapped dataset's data info of image ``idx`` (samplers read sizes from it)."""
        return self.dataset.get_data_info(idx)

    def get_cat_ids(self, idx: int) -> list[int]:
        return self.dataset.get_cat_ids(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def update_skip_type_keys(self, skip_type_keys: Sequence[str] | None) -> None:
        """Skip the transforms of these type names from now on (a hook may call this)."""
        if skip_type_keys is not None and not all(isinstance(k, str) for k in skip_type_keys):
            raise TypeError(f'skip_type_keys must be transform type names, got {skip_type_keys}')
        self._skip_type_keys = None if skip_type_keys is None else list(skip_type_keys)

    def _mix_results(self, transform: Any) -> list[dict]:
        """Loaded copies of the images ``transform.get_indexes`` asks for."""
        for _ in range(self.max_refetch):
            indexes = transform.get_indexes(self.dataset)
            if not isinstance(indexes, Sequence):
                indexes = [indexes]
            mix = [copy.deepcopy(self.dataset[i]) for i in indexes]
            if None not in mix:
                return mix
        raise RuntimeError(f'MultiImageMixDataset: the wrapped dataset returned None for the '
                           f'images {type(transform).__name__} asked for, {self.max_refetch} '
                           f'times; check its loading pipeline.')

    def __getitem__(self, idx: int) -> dict:
        results = copy.deepcopy(self.dataset[idx])
        for transform, kind in zip(self.pipeline, self.pipeline_types):
            if self._skip_type_keys is not None and kind in self._skip_type_keys:
                continue
            if hasattr(transform, 'get_indexes'):
                results['mix_results'] = self._mix_results(transform)
            for _ in range(self.max_refetch):
                updated = transform(copy.deepcopy(results))
                if updated is not None:
                    results = updated
                    break
            else:
                raise RuntimeError(f'MultiImageMixDataset: {kind} returned None '
                                   f'{self.max_refetch} times for image {idx}.')
            results.pop('mix_results', None)
        return results
