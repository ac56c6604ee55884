"""Every base dataset config loads, its pipelines build, and they run on a tiny image."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine import Config

CONFIG_DIR = Path(__file__).resolve().parents[3] / 'configs' / '_base_' / 'datasets'
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob('*.py'))
EXPECTED = {'coco_detection.py', 'coco_detection_lsj.py', 'lvis_v1_detection.py',
            'objects365v1_detection.py', 'objects365v2_detection.py',
            'synthetic_detection.py', 'coco_instance_lsj.py', 'lvis_v1_instance_lsj.py'}


def load(name: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / name))


def pipelines(cfg: Config) -> dict[str, list]:
    """Each split's pipeline, looked up through dataset wrappers (LVIS training wraps its
    dataset in ClassBalancedDataset)."""
    found = {}
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        while 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset.dataset
        found[split] = dataset.pipeline
    return found


@pytest.fixture
def data_info(tmp_path) -> dict:
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / 'img.png'
    cv2.imwrite(str(path), img)
    return dict(img_path=str(path), img_id=7, height=48, width=64, instances=[
        dict(bbox=[4, 4, 40, 30], bbox_label=2, ignore_flag=0),
        dict(bbox=[30, 20, 60, 46], bbox_label=5, ignore_flag=1)])


def test_all_expected_configs_exist():
    assert EXPECTED <= set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads_and_pipelines_build(name):
    cfg = load(name)
    assert 'default_scope' not in cfg  # set by the runtime config, not here
    for split, pipeline in pipelines(cfg).items():
        built = Compose(pipeline)
        assert len(built.transforms) == len(pipeline), split
        assert type(built.transforms[-1]).__name__ == 'PackDetInputs'
    instance = name.endswith('_instance_lsj.py')  # box and mask AP
    assert cfg.val_evaluator.metric == (['bbox', 'segm'] if instance else 'bbox')
    assert cfg.val_evaluator.ann_file.startswith(cfg.data_root)
    assert cfg.train_dataloader.sampler == dict(type='DefaultSampler', shuffle=True)


@pytest.mark.parametrize('name', ['coco_detection.py', 'lvis_v1_detection.py'])
def test_detr_train_pipeline_scales(name, data_info):
    train = Compose(pipelines(load(name))['train'])
    for seed in range(6):
        np.random.seed(seed)
        out = train(dict(data_info))
        h, w = out['inputs'].shape[-2:]
        # Both branches end with a short side in 480..800 (step 32) capped by long <= 1333.
        assert max(h, w) <= 1333 and min(h, w) <= 800
        assert min(h, w) in range(480, 801, 32) or max(h, w) == 1333
        assert out['data_samples'].metainfo['img_shape'] == (h, w)


def test_lsj_pipelines_give_1024_squares(data_info):
    split_pipelines = pipelines(load('coco_detection_lsj.py'))
    np.random.seed(0)
    for split in ('train', 'test'):
        out = Compose(split_pipelines[split])(dict(data_info))
        assert out['inputs'].shape == (3, 1024, 1024), split
    test = Compose(split_pipelines['test'])(dict(data_info))
    # 64 x 48 -> scaled by 16 to 1024 x 768, then padded with 114 below.
    assert test['data_samples'].metainfo['scale_factor'] == pytest.approx((16.0, 16.0))
    assert test['inputs'][:, 768:].eq(114).all()


def test_synthetic_pipelines(data_info):
    cfg = load('synthetic_detection.py')
    assert len(cfg.metainfo['classes']) == 8
    assert cfg.train_dataloader.num_workers <= 1
    np.random.seed(0)
    out = Compose(pipelines(cfg)['train'])(dict(data_info))
    h, w = out['inputs'].shape[-2:]
    assert min(h, w) in range(160, 257, 32) and max(h, w) <= 320
    sample = out['data_samples']
    assert sample.gt_instances.labels.tolist() == [2]
    assert sample.ignored_instances.labels.tolist() == [5]
    test = Compose(pipelines(cfg)['test'])(dict(data_info))
    # 64 x 48 into (320, 256) keeping the ratio: factor min(320 / 64, 256 / 48) = 5
    assert test['inputs'].shape == (3, 240, 320) and test['inputs'].dtype == torch.uint8
    # The test pipeline loads boxes after Resize: they stay in original pixels.
    assert test['data_samples'].gt_instances.bboxes.tolist() == [[4, 4, 40, 30]]
