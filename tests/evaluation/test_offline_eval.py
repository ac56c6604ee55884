"""Reading a tools/test.py --out file back, and checking it against the config's dataset."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from mmengine.config import Config

from codetr.evaluation import DumpDetResults, load_det_results
from codetr.evaluation.offline import check_prediction_ids, evaluator_metrics

RECORDS = [dict(img_id=3, img_path='a.png', ori_shape=(20, 30), pred_instances=dict(
    bboxes=np.array([[1., 2., 3., 4.]], np.float32), scores=np.array([0.5], np.float32),
    labels=np.array([2])))]


@pytest.mark.parametrize('suffix', ['.pkl', '.json'])
def test_dump_then_load_round_trip(tmp_path, suffix):
    path = str(tmp_path / f'res{suffix}')
    DumpDetResults(out_file_path=path).compute_metrics(RECORDS)
    record, = load_det_results(path)
    assert record['img_id'] == 3 and tuple(record['ori_shape']) == (20, 30)
    pred = record['pred_instances']
    assert pred['bboxes'].tolist() == [[1., 2., 3., 4.]] and pred['bboxes'].shape == (1, 4)
    assert pred['scores'].tolist() == [0.5] and pred['labels'].dtype == np.int64


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r'res\.txt: predictions must be a \.pkl'):
        load_det_results(str(tmp_path / 'res.txt'))
    with pytest.raises(FileNotFoundError, match='predictions file not found'):
        load_det_results(str(tmp_path / 'none.pkl'))
    path = tmp_path / 'dict.pkl'
    path.write_bytes(pickle.dumps({'a': 1}))
    with pytest.raises(ValueError, match='holds a dict, not the list'):
        load_det_results(str(path))
    path.write_bytes(pickle.dumps([dict(img_id=1, pred_instances=dict(bboxes=[]))]))
    with pytest.raises(ValueError, match=r"record 0 \(img_id 1\) has no pred_instances "
                                         r"\['scores', 'labels'\]"):
        load_det_results(str(path))
    path.write_bytes(pickle.dumps([dict(img_id=1, pred_instances=dict(
        bboxes=[], scores=[], labels=[], run=os.system))]))
    with pytest.raises(pickle.UnpicklingError, match='not allowed in a predictions file'):
        load_det_results(str(path))


def test_prediction_ids_must_be_in_the_dataset():
    infos = {1: {}, 2: {}}
    check_prediction_ids([dict(img_id=1), dict(img_id=2)], infos, 'res.pkl')
    with pytest.raises(ValueError, match=r'res.pkl: predictions for image ids \[7\]'):
        check_prediction_ids([dict(img_id=7)], infos, 'res.pkl')
    with pytest.raises(ValueError, match=r'image ids \[1\] have more than one'):
        check_prediction_ids([dict(img_id=1), dict(img_id=1)], infos, 'res.pkl')


def test_evaluator_metrics_leave_out_the_dump():
    cfg = Config(dict(test_evaluator=[dict(type='CocoMetric', ann_file='a.json'),
                                      dict(type='DumpDetResults', out_file_path='x.pkl')]))
    assert evaluator_metrics(cfg) == [dict(type='CocoMetric', ann_file='a.json')]
    wrapped = Config(dict(test_evaluator=dict(metrics=dict(type='CocoMetric'))))
    assert evaluator_metrics(wrapped) == [dict(type='CocoMetric')]
    with pytest.raises(ValueError, match='no metric other than DumpDetResults'):
        evaluator_metrics(Config(dict(test_evaluator=dict(type='DumpDetResults',
                                                          out_file_path='x.pkl'))))
    with pytest.raises(KeyError, match='no val_evaluator'):
        evaluator_metrics(Config(dict()), 'val')
