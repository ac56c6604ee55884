"""Evaluation of saved predictions (``tools/test.py --out``) without building a model.

The ground truth comes from the config's ``<split>_dataloader.dataset`` built without its
pipeline (no image is read); the metrics are the config's ``<split>_evaluator`` minus any
``DumpDetResults``. Predictions are matched to dataset images by ``img_id``.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.utils import track_iter_progress

from codetr.registry import DATASETS

SPLITS = ('train', 'val', 'test')


def build_split_dataset(cfg: Config, split: str = 'test'):
    """``cfg.<split>_dataloader.dataset`` with an empty pipeline, fully initialised."""
    if split not in SPLITS:
        raise ValueError(f'split={split!r} is not one of {SPLITS}.')
    loader = cfg.get(f'{split}_dataloader')
    if not loader or 'dataset' not in loader:
        raise KeyError(f'The config has no {split}_dataloader.dataset to read the ground truth '
                       f'from.')
    dataset_cfg = copy.deepcopy(loader['dataset'])
    dataset_cfg['pipeline'] = []
    dataset = DATASETS.build(dataset_cfg)
    dataset.full_init()
    return dataset


def data_infos_by_id(dataset) -> dict[int, dict]:
    """``{img_id: data_info}`` of every image of a (fully initialised) dataset."""
    return {info['img_id']: info
            for info in (dataset.get_data_info(i) for i in range(len(dataset)))}


def check_prediction_ids(records: Sequence[dict], infos: dict, source: str) -> None:
    """Raise if a prediction names an image the dataset does not have, or names one twice."""
    ids = [r['img_id'] for r in records]
    unknown = sorted({i for i in ids if i not in infos}, key=str)
    if unknown:
        raise ValueError(f'{source}: predictions for image ids {unknown[:10]} '
                         f'({len(unknown)} in all) that are not in the dataset of the config; '
                         f'were they made with another split or annotation file?')
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1}, key=str)
        raise ValueError(f'{source}: image ids {repeated[:10]} have more than one prediction '
                         f'record.')


def evaluator_metrics(cfg: Config, split: str = 'test') -> list[dict]:
    """The metric configs of ``cfg.<split>_evaluator``, without ``DumpDetResults``."""
    evaluator = cfg.get(f'{split}_evaluator')
    if evaluator is None:
        raise KeyError(f'The config has no {split}_evaluator.')
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        evaluator = evaluator['metrics']
    metrics = [evaluator] if isinstance(evaluator, dict) else list(evaluator)
    metrics = [copy.deepcopy(m) for m in metrics
               if str(m.get('type', '')).split('.')[-1] != 'DumpDetResults']
    if not metrics:
        raise ValueError(f'{split}_evaluator has no metric other than DumpDetResults.')
    return metrics


def _sample(record: dict, info: dict) -> dict:
    """One evaluator data sample: the saved prediction plus the dataset's image fields."""
    ori_shape = tuple(record.get('ori_shape') or ()) or (info['height'], info['width'])
    return dict(img_id=record['img_id'], img_path=info.get('img_path'), ori_shape=ori_shape,
                instances=info.get('instances', []), pred_instances=record['pred_instances'])


def evaluate_det_results(cfg: Config, records: Sequence[dict], split: str = 'test',
                         source: str = 'predictions', progress: bool = True) -> dict:
    """Metrics of ``records`` (``load_det_results``) under ``cfg.<split>_evaluator``.

    Returns what the Runner's test loop would log, e.g. ``{'coco/bbox_mAP': ..., ...}``.
    """
    dataset = build_split_dataset(cfg, split)
    infos = data_infos_by_id(dataset)
    check_prediction_ids(records, infos, source)
    evaluator = Evaluator(evaluator_metrics(cfg, split))
    evaluator.dataset_meta = dataset.metainfo
    items = track_iter_progress(list(records)) if progress and records else records
    for record in items:
        evaluator.process(data_samples=[_sample(record, infos[record['img_id']])])
    return evaluator.evaluate(len(records))
