"""CopyPaste on hand-made masks (occluded boxes updated, hidden objects dropped) and the
MultiImageMixDataset that feeds it."""
import numpy as np
import pytest

from codetr.datasets import MultiImageMixDataset
from codetr.registry import TRANSFORMS
from codetr.structures import BitmapMasks, PolygonMasks

S = 20  # both images are S x S


def rect_results(rects: list, labels: list, value: int, polygons: bool = False) -> dict:
    masks = np.zeros((len(rects), S, S), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, rects):
        m[y1:y2, x1:x2] = 1
    gt_masks = BitmapMasks(masks, S, S)
    if polygons:
        gt_masks = PolygonMasks([[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in rects],
                                S, S)
    return dict(img=np.full((S, S, 3), value, np.uint8), gt_bboxes=np.asarray(rects, np.float32),
                gt_bboxes_labels=np.asarray(labels, np.int64), gt_masks=gt_masks,
                gt_ignore_flags=np.zeros(len(rects), bool))


# Destination: A is half covered by the pasted C (its box shrinks, enough stays visible),
# B is untouched, D is hidden completely, E keeps a sliver (box moved, too few pixels).
DST = dict(A=[0, 0, 10, 10], B=[12, 12, 16, 16], D=[14, 2, 18, 6], E=[3, 0, 9, 3])
C = [5, 0, 20, 10]


@pytest.mark.parametrize('polygons', [False, True])
def test_copy_paste_updates_occluded_boxes_and_drops_hidden_objects(polygons):
    dst = rect_results(list(DST.values()), [0, 1, 2, 3], value=10, polygons=polygons)
    src = rect_results([C, [0, 15, 3, 18]], [7, 6], value=200, polygons=polygons)
    dst['mix_results'] = [src]
    paste = TRANSFORMS.build(dict(type='CopyPaste', selected=False, bbox_occluded_thr=2,
                                  mask_occluded_thr=30))
    out = paste(dst)
    # kept destination objects first (A with its visible box, B), then the pasted ones
    np.testing.assert_array_equal(out['gt_bboxes'], [[0, 0, 5, 10], DST['B'], C, [0, 15, 3, 18]])
    assert out['gt_bboxes_labels'].tolist() == [0, 1, 7, 6]
    assert out['gt_ignore_flags'].tolist() == [False] * 4
    masks = out['gt_masks']
    assert isinstance(masks, BitmapMasks) and len(masks) == 4
    np.testing.assert_array_equal(masks.get_bboxes(), out['gt_bboxes'])
    np.testing.assert_array_equal(masks.areas, [50, 16, 150, 9])
    img = out['img']
    assert (img[0:10, 5:20] == 200).all() and (img[15:18, 0:3] == 200).all()
    assert (img[0:10, 0:5] == 10).all() and img.dtype == np.uint8
    assert (img == 200).sum() == 3 * (150 + 9)


def test_copy_paste_thresholds_keep_a_box_that_barely_moved():
    dst = rect_results([DST['A']], [0], value=10)
    dst['mix_results'] = [rect_results([C], [1], value=200)]
    out = TRANSFORMS.build(dict(type='CopyPaste', selected=False, bbox_occluded_thr=5,
                                mask_occluded_thr=1000))(dst)
    np.testing.assert_array_equal(out['gt_bboxes'], [[0, 0, 5, 10], C])  # moved 5 <= 5


def test_copy_paste_random_subset_and_errors():
    paste = TRANSFORMS.build(dict(type='CopyPaste', max_num_pasted=3))
    counts = set()
    for seed in range(30):
        np.random.seed(seed)
        dst = rect_results([DST['B']], [0], value=10)
        dst['mix_results'] = [rect_results([[0, 0, 2, 2], [3, 3, 5, 5], [6, 6, 8, 8],
                                            [9, 0, 11, 2]], [1, 2, 3, 4], value=200)]
        out = paste(dst)
        counts.add(len(out['gt_bboxes']) - 1)
    assert counts == {0, 1, 2}  # randint(0, min(4 + 1, 3)): MMDetection's rule
    bad = rect_results([DST['B']], [0], value=10)
    bad['mix_results'] = [dict(rect_results([C], [1], 200), img=np.zeros((S, S + 1, 3)))]
    with pytest.raises(ValueError, match='same size'):
        paste(bad)
    with pytest.raises(ValueError, match='MultiImageMixDataset'):
        paste(rect_results([C], [1], 200))


class ListDataset:
    """The dataset interface MultiImageMixDataset uses, over prepared results dicts."""

    metainfo = dict(classes=('a', 'b'))

    def __init__(self, items):
        self.items = items
        self.initialised = False

    def full_init(self):
        self.initialised = True

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        return dict(self.items[idx])

    def get_data_info(self, idx):
        return dict(height=S, width=S)


def test_multi_image_mix_dataset_feeds_copy_paste_and_packs():
    items = [rect_results([DST['A']], [0], value=10), rect_results([C], [1], value=200)]
    dataset = MultiImageMixDataset(
        dataset=ListDataset(items),
        pipeline=[dict(type='CopyPaste', selected=False, bbox_occluded_thr=2,
                       mask_occluded_thr=30), dict(type='PackDetInputs')])
    assert dataset.dataset.initialised and len(dataset) == 2
    assert dataset.metainfo['classes'] == ('a', 'b')
    dataset.pipeline[0].get_indexes = lambda ds: 1  # paste image 1 onto image 0
    packed = dataset[0]
    gt = packed['data_samples'].gt_instances
    assert gt.labels.tolist() == [0, 1]
    np.testing.assert_array_equal(gt.bboxes.numpy(), [[0, 0, 5, 10], C])
    assert len(gt.masks) == 2 and 'mix_results' not in packed
    dataset.update_skip_type_keys(['CopyPaste'])  # CopyPaste off: image 0 as loaded
    assert dataset[0]['data_samples'].gt_instances.labels.tolist() == [0]


def test_coco_instance_lsj_recipe_runs_on_a_tiny_coco_file(tmp_path):
    """The shipped LSJ + Copy-Paste training set (configs/_base_/datasets/coco_instance_lsj.py)
    on two polygon-annotated images: 1024 x 1024 inputs, every mask's box = its box."""
    import json
    from pathlib import Path

    import cv2
    from mmengine.config import Config

    from codetr.registry import DATASETS

    images, anns = [], []
    for i in (1, 2):
        cv2.imwrite(str(tmp_path / f'{i}.png'), np.full((120, 160, 3), 40 * i, np.uint8))
        images.append(dict(id=i, file_name=f'{i}.png', height=120, width=160))
        for x1, y1, x2, y2 in ([10, 10, 70, 90], [60, 30, 150, 110]):
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=1, iscrowd=0,
                             bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                             segmentation=[[x1, y1, x2, y1, (x1 + x2) / 2, y2]]))
    (tmp_path / 'ann.json').write_text(json.dumps(
        dict(images=images, annotations=anns, categories=[dict(id=1, name='person')])))
    root = Path(__file__).resolve().parents[3]
    cfg = Config.fromfile(str(root / 'configs/_base_/datasets/coco_instance_lsj.py'))
    cfg.train_dataloader.dataset.dataset.update(
        data_root=str(tmp_path), ann_file='ann.json', data_prefix=dict(img=''),
        metainfo=dict(classes=('person',)))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert type(dataset).__name__ == 'MultiImageMixDataset'
    for seed in range(3):
        np.random.seed(seed)
        out = dataset[seed % 2]
        assert out['inputs'].shape == (3, 1024, 1024)
        gt = out['data_samples'].gt_instances
        assert (gt.masks.height, gt.masks.width) == (1024, 1024)
        np.testing.assert_allclose(gt.masks.get_bboxes(), gt.bboxes.numpy(), atol=1)
