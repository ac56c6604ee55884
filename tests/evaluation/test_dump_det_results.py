"""DumpDetResults writes every image's predictions and reports no metric."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from codetr.evaluation import DumpDetResults
from codetr.registry import METRICS

from .helpers import sample


def _dump(path: str) -> dict:
    metric = METRICS.build(dict(type='DumpDetResults', out_file_path=path))
    metric.process({}, [sample(3, [[1, 2, 3, 4]], [0.5], [2], img_path='a.jpg'),
                        sample(4, [], [], [])])
    return metric.evaluate(2)


def test_pickle_dump(tmp_path):
    path = tmp_path / 'sub' / 'out.pkl'
    assert _dump(str(path)) == {}
    records = pickle.loads(path.read_bytes())
    assert [r['img_id'] for r in records] == [3, 4]
    assert records[0]['img_path'] == 'a.jpg' and records[0]['ori_shape'] == (200, 300)
    np.testing.assert_allclose(records[0]['pred_instances']['bboxes'], [[1, 2, 3, 4]])
    assert records[0]['pred_instances']['labels'].tolist() == [2]
    assert records[1]['pred_instances']['bboxes'].shape == (0, 4)


def test_json_dump(tmp_path):
    path = tmp_path / 'out.json'
    _dump(str(path))
    records = json.loads(path.read_text())
    assert records[0]['pred_instances'] == dict(bboxes=[[1.0, 2.0, 3.0, 4.0]], scores=[0.5],
                                                labels=[2])


def test_bad_suffix_raises():
    with pytest.raises(ValueError, match='must end with'):
        DumpDetResults('out.txt')
