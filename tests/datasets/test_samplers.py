"""AspectRatioBatchSampler and repeat-factor sampling (mmengine's ClassBalancedDataset)."""
import json
import math
from collections import Counter
from pathlib import Path

import cv2
import mmengine.dataset.sampler as sampler_module
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.dataset import ClassBalancedDataset, DefaultSampler
from mmengine.runner import Runner

from codetr.datasets import AspectRatioBatchSampler, LVISV1Dataset
from codetr.registry import DATA_SAMPLERS, DATASETS


class SizesDataset:
    """Only what the sampler reads: a length and each image's width and height."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = sizes  # (width, height)

    def __len__(self) -> int:
        return len(self.sizes)

    def get_data_info(self, idx: int) -> dict:
        width, height = self.sizes[idx]
        return dict(width=width, height=height)


# 7 landscape (w >= h, one square) and 6 portrait images, interleaved.
SIZES = [(64, 48), (48, 64), (64, 64), (40, 80), (80, 40), (30, 90), (90, 30),
         (50, 60), (60, 50), (55, 70), (70, 55), (33, 66), (66, 33)]
LANDSCAPE = {i for i, (w, h) in enumerate(SIZES) if w >= h}


def batches_of(batch_size: int, drop_last: bool, seed: int = 0) -> list[list[int]]:
    sampler = DefaultSampler(SizesDataset(SIZES), shuffle=True, seed=seed)
    return list(AspectRatioBatchSampler(sampler, batch_size, drop_last=drop_last))


@pytest.mark.parametrize('batch_size', [2, 3, 4])
def test_full_batches_share_orientation_and_every_index_appears_once(batch_size):
    assert len(LANDSCAPE) == 7
    batches = batches_of(batch_size, drop_last=False)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(SIZES)))  # each index exactly once
    # Full batches drawn from a bucket are single-orientation; only the leftovers at the end
    # (fewer than batch_size per bucket, so fewer than 2 * batch_size in all) may mix.
    per_bucket = len(LANDSCAPE) // batch_size + (len(SIZES) - len(LANDSCAPE)) // batch_size
    for batch in batches[:per_bucket]:
        assert len(batch) == batch_size
        assert len({i in LANDSCAPE for i in batch}) == 1, batch
    assert sum(len(b) for b in batches[per_bucket:]) < 2 * batch_size
    assert len(batches) == math.ceil(len(SIZES) / batch_size)


@pytest.mark.parametrize('batch_size', [2, 3, 4, 5])
def test_drop_last_drops_exactly_the_remainder(batch_size):
    batches = batches_of(batch_size, drop_last=True)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == len(SIZES) - len(SIZES) % batch_size
    assert all(len(b) == batch_size for b in batches)
    assert len(batches) == len(SIZES) // batch_size


@pytest.mark.parametrize('drop_last', [False, True])
@pytest.mark.parametrize('batch_size', [1, 2, 3, 4, 13, 20])
def test_len_matches_what_is_yielded(batch_size, drop_last):
    sampler = DefaultSampler(SizesDataset(SIZES), shuffle=True, seed=3)
    batch_sampler = AspectRatioBatchSampler(sampler, batch_size, drop_last=drop_last)
    assert len(batch_sampler) == len(list(batch_sampler))


def test_uniform_orientation_gives_only_uniform_batches():
    sampler = DefaultSampler(SizesDataset([(64, 32)] * 5 + [(32, 64)] * 4), shuffle=True)
    batches = list(AspectRatioBatchSampler(sampler, 2))
    # 5 landscape -> 2 full + 1 left; 4 portrait -> 2 full; the last batch holds 1 image.
    assert [len(b) for b in batches] == [2, 2, 2, 2, 1]
    assert all(len({i < 5 for i in b}) == 1 for b in batches)


def test_follows_the_wrapped_sampler_epoch():
    sampler = DefaultSampler(SizesDataset(SIZES), shuffle=True, seed=0)
    batch_sampler = AspectRatioBatchSampler(sampler, 2)
    first = list(batch_sampler)
    assert list(batch_sampler) == first  # same epoch, same order
    batch_sampler.sampler.set_epoch(1)  # what the train loop calls
    assert list(batch_sampler) != first


def test_each_rank_yields_the_same_number_of_oriented_batches(monkeypatch):
    """Two DDP ranks (faked): each wraps its own shard, so both yield len() batches."""
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(sampler_module, 'get_dist_info', lambda r=rank: (r, 2))
        sampler = DefaultSampler(SizesDataset(SIZES), shuffle=True, seed=0)
        per_rank.append(list(AspectRatioBatchSampler(sampler, 2, drop_last=True)))
    assert len(per_rank[0]) == len(per_rank[1]) == 3  # 7 indices per rank (13 padded to 14)
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(set(seen)) == len(seen) == 12


def test_bad_arguments_raise_with_a_hint():
    with pytest.raises(ValueError, match='positive int'):
        AspectRatioBatchSampler(DefaultSampler(SizesDataset(SIZES)), 0)
    with pytest.raises(TypeError, match='get_data_info'):
        AspectRatioBatchSampler(range(4), 2)
    no_size = SizesDataset(SIZES)
    no_size.get_data_info = lambda idx: dict(img_id=idx)
    with pytest.raises(KeyError, match='"width"/"height"'):
        list(AspectRatioBatchSampler(DefaultSampler(no_size), 2))


# ---------------------------------------------------------------- through the Runner
def write_coco(tmp_path: Path, sizes: list[tuple[int, int]]) -> str:
    images, anns = [], []
    for i, (w, h) in enumerate(sizes, start=1):
        cv2.imwrite(str(tmp_path / f'{i}.png'), np.zeros((h, w, 3), np.uint8))
        images.append(dict(id=i, file_name=f'{i}.png', width=w, height=h))
        anns.append(dict(id=i, image_id=i, category_id=1, bbox=[1, 1, 4, 4], area=16))
    path = tmp_path / 'train.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=[dict(id=1, name='thing')])))
    return str(path)


def test_runner_builds_it_from_the_config_dict(tmp_path):
    assert DATA_SAMPLERS.get('AspectRatioBatchSampler') is AspectRatioBatchSampler
    sizes = [(32, 24)] * 5 + [(24, 32)] * 4
    loader = Runner.build_dataloader(dict(
        batch_size=2, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=True),
        batch_sampler=dict(type='AspectRatioBatchSampler'),
        dataset=dict(type='CocoDataset', ann_file=write_coco(tmp_path, sizes),
                     metainfo=dict(classes=('thing',)), data_prefix=dict(img=str(tmp_path)),
                     pipeline=[dict(type='LoadImageFromFile')])), seed=0)
    assert isinstance(loader.batch_sampler, AspectRatioBatchSampler)
    assert loader.batch_sampler.batch_size == 2
    assert isinstance(loader.batch_sampler.sampler, DefaultSampler)
    assert len(loader) == 5
    shapes = [[img.shape[:2] for img in batch['img']] for batch in loader]  # pseudo_collate
    assert [len(s) for s in shapes] == [2, 2, 2, 2, 1]
    assert all(len(set(s)) == 1 for s in shapes)  # (h, w) shared in every batch
    assert Counter(s for batch in shapes for s in batch) == {(24, 32): 5, (32, 24): 4}


# ------------------------------------------------------- LVIS repeat-factor sampling
def write_lvis(tmp_path: Path) -> str:
    """10 images: 'common' in images 1-9, 'rare' in image 1, 'uncommon' in 2-3; 10 has none.

    Image 1 is portrait, the others landscape; every side passes the configs' min_size=32."""
    cats = [dict(id=1, name='common'), dict(id=2, name='rare'), dict(id=3, name='uncommon')]
    images = [dict(id=i, width=40 if i == 1 else 60, height=60 if i == 1 else 40,
                   coco_url=f'http://images.cocodataset.org/train2017/{i:012d}.jpg')
              for i in range(1, 11)]
    labels = {i: [1] for i in range(1, 10)}
    labels[1] += [2]
    labels[2] += [3]
    labels[3] += [3, 3]  # two boxes of one class count once in f(c)
    pairs = [(i, c) for i, cs in labels.items() for c in cs]
    anns = [dict(id=n, image_id=i, category_id=c, bbox=[1, 1, 5, 5], area=25)
            for n, (i, c) in enumerate(pairs, start=1)]
    path = tmp_path / 'lvis_train.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return str(path)


def lvis_cfg(ann_file: str, oversample_thr: float) -> dict:
    return dict(type='ClassBalancedDataset', oversample_thr=oversample_thr,
                dataset=dict(type='LVISV1Dataset', ann_file=ann_file,
                             filter_cfg=dict(filter_empty_gt=False)))


def test_lvis_get_cat_ids_gives_the_labels_of_each_box(tmp_path):
    ds = LVISV1Dataset(ann_file=write_lvis(tmp_path), filter_cfg=dict(filter_empty_gt=False))
    assert [ds.get_cat_ids(i) for i in (0, 1, 2, 9)] == [[0, 1], [0, 2], [0, 2, 2], []]


def test_class_balanced_lvis_repeats_rare_images_by_the_repeat_factor(tmp_path):
    t = 0.5
    # By hand: f(common) = 9/10, f(rare) = 1/10, f(uncommon) = 2/10 (images 2 and 3).
    # r(c) = max(1, sqrt(t / f(c))): common 1, rare sqrt(5) = 2.236, uncommon sqrt(2.5) = 1.58.
    # Image repeat = max over its classes, rounded up: image 1 -> 3, images 2, 3 -> 2, else 1.
    assert math.ceil(math.sqrt(t / 0.1)) == 3 and math.ceil(math.sqrt(t / 0.2)) == 2
    ds = DATASETS.build(lvis_cfg(write_lvis(tmp_path), t))
    assert isinstance(ds, ClassBalancedDataset)
    counts = Counter(ds.get_data_info(i)['img_id'] for i in range(len(ds)))
    assert counts == {1: 3, 2: 2, 3: 2, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1}
    assert len(ds) == 14
    # With the shipped threshold (1e-3) no class of this set is rare: nothing repeats.
    assert len(DATASETS.build(lvis_cfg(write_lvis(tmp_path), 1e-3))) == 10


def test_aspect_ratio_batches_over_the_class_balanced_set(tmp_path):
    """The two compose: every repeated copy appears once, and the portrait image's three
    copies fill a batch of their own."""
    loader = Runner.build_dataloader(dict(
        batch_size=3, num_workers=0, collate_fn=dict(type='pseudo_collate'),
        sampler=dict(type='DefaultSampler', shuffle=True),
        batch_sampler=dict(type='AspectRatioBatchSampler'),
        dataset=lvis_cfg(write_lvis(tmp_path), 0.5)), seed=0)
    batches = list(loader.batch_sampler)
    assert len(batches) == len(loader) == 5  # 14 copies in batches of 3
    assert sorted(i for b in batches for i in b) == list(range(14))
    dataset = loader.dataset
    img_ids = [[dataset.get_data_info(i)['img_id'] for i in b] for b in batches]
    assert [1, 1, 1] in img_ids


# ------------------------------------------------------------------ shipped configs
CONFIGS = Path(__file__).resolve().parents[2] / 'configs'


def shipped_loader(config: str, tmp_path: Path) -> dict:
    """The config's train_dataloader, pointed at tmp_path's tiny LVIS set, in-process."""
    cfg = Config.fromfile(CONFIGS / config).train_dataloader.to_dict()
    inner = cfg['dataset']['dataset']
    inner.update(data_root=str(tmp_path), ann_file=write_lvis(tmp_path), pipeline=[])
    cfg.update(num_workers=0, persistent_workers=False)
    return cfg


def test_shipped_lvis_loader_builds_class_balanced_and_aspect_grouped(tmp_path):
    loader = Runner.build_dataloader(
        shipped_loader('_base_/datasets/lvis_v1_detection.py', tmp_path), seed=0)
    assert isinstance(loader.batch_sampler, AspectRatioBatchSampler)
    assert isinstance(loader.dataset, ClassBalancedDataset)
    assert loader.dataset.oversample_thr == 1e-3
    assert len(loader.dataset) == 9  # image 10 has no box: filter_empty_gt drops it
    # Co-DINO's LVIS config keeps images without boxes, one level down.
    loader = Runner.build_dataloader(
        shipped_loader('co_dino/co_dino_5scale_r50_8xb2_1x_lvis.py', tmp_path), seed=0)
    assert len(loader.dataset) == 10
    assert len(loader) == 5  # batch_size 2


@pytest.mark.parametrize('config', ['coco_detection.py', 'objects365v1_detection.py',
                                    'objects365v2_detection.py'])
def test_coco_style_base_configs_group_by_aspect_ratio(config):
    cfg = Config.fromfile(CONFIGS / '_base_' / 'datasets' / config)
    assert cfg.train_dataloader.batch_sampler == dict(type='AspectRatioBatchSampler')
    assert 'batch_sampler' not in cfg.val_dataloader
