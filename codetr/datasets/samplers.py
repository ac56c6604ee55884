"""Batch samplers: batches of images that share an orientation, to cut batch padding."""
from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import BatchSampler, Sampler

from codetr.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class AspectRatioBatchSampler(BatchSampler):
    """Group the indices of ``sampler`` into batches of landscape or of portrait images.

    An image is landscape when ``width >= height`` in ``dataset.get_data_info(idx)`` (the
    original size, before the pipeline). Indices are taken in the sampler's order and put
    in the bucket of their orientation; a full bucket is yielded as a batch. At the end of
    the epoch the leftovers (fewer than ``batch_size`` per bucket) are yielded landscape
    first, in batches that may mix orientations; a last incomplete batch is dropped when
    ``drop_last``. So an epoch yields ``len(sampler) // batch_size`` batches, plus one
    when ``len(sampler) % batch_size`` and not ``drop_last``, as a plain ``BatchSampler``
    would, and each index the sampler gives appears in at most one batch.

    Under DDP it wraps the per-rank sampler (``DefaultSampler``), so every rank yields the
    same number of batches; the train loop's ``set_epoch`` reaches the wrapped sampler as
    ``batch_sampler.sampler``.

    Config use (mmengine's Runner passes ``sampler`` and ``batch_size``)::

        train_dataloader = dict(batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True),
                                batch_sampler=dict(type='AspectRatioBatchSampler'), ...)

    Args:
        sampler: yields dataset indices; must expose the dataset as ``.dataset``
            (mmengine's samplers) or ``.data_source`` (torch's).
        batch_size: images per batch.
        drop_last: drop the last batch of the epoch if it holds fewer than ``batch_size``.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = False) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f'batch_size must be a positive int; got {batch_size!r}.')
        dataset = getattr(sampler, 'dataset', getattr(sampler, 'data_source', None))
        if dataset is None or not hasattr(dataset, 'get_data_info'):
            raise TypeError(f'AspectRatioBatchSampler needs a sampler whose `.dataset` has '
                            f'get_data_info(idx) (e.g. DefaultSampler over a codetr dataset); '
                            f'got {type(sampler).__name__}.')
        # BatchSampler.__init__ is not called: its checks reject mmengine samplers' types.
        self.sampler = sampler
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last

    def is_landscape(self, idx: int) -> bool:
        """``width >= height`` of image ``idx``; raises if its data_info lacks the size."""
        info = self.dataset.get_data_info(idx)
        try:
            return info['width'] >= info['height']
        except KeyError:
            raise KeyError(f'data_info of index {idx} has no "width"/"height" (pixels); '
                           f'AspectRatioBatchSampler groups images by them. Add them in '
                           f'load_data_list or remove batch_sampler from the config.') from None

    def __iter__(self) -> Iterator[list[int]]:
        buckets: tuple[list[int], list[int]] = ([], [])  # (portrait, landscape)
        for idx in self.sampler:
            bucket = buckets[int(self.is_landscape(idx))]
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
        leftovers = buckets[1] + buckets[0]
        while leftovers:
            batch, leftovers = leftovers[:self.batch_size], leftovers[self.batch_size:]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        if not isinstance(self.sampler, Sized):
            raise TypeError(f'{type(self.sampler).__name__} has no length (e.g. an infinite '
                            f'sampler), so neither has AspectRatioBatchSampler.')
        num, size = len(self.sampler), self.batch_size
        return num // size if self.drop_last else (num + size - 1) // size
