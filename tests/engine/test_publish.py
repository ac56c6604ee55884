"""publish_model: training state stripped, aux heads optionally dropped, sha256 in the name."""
from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from codetr.engine.checkpoint import CheckpointError, load_checkpoint
from codetr.engine.publish import published_name, strip_checkpoint

ROOT = Path(__file__).resolve().parents[2]
STATE = {'backbone.conv.weight': torch.ones(2, 3), 'query_head.cls.bias': torch.zeros(4),
         'query_head.pos_query_generators.atss.pos_trans.weight': torch.ones(1),
         'aux_heads.atss.atss_cls.weight': torch.ones(1), 'adapter.downsample.0.0.weight':
         torch.ones(1)}


def _training_checkpoint(path: Path) -> Path:
    """What the Runner saves: weights, meta and the training state (mmengine's types)."""
    buffer = HistoryBuffer()
    buffer.update(0.5)
    torch.save(dict(state_dict=STATE, meta=dict(epoch=3, iter=120, seed=np.int64(0),
                                                dataset_meta=dict(classes=('a', 'b'))),
                    optimizer=dict(state={}, param_groups=[dict(lr=1e-4)]),
                    message_hub=dict(log_scalars=dict(loss=buffer)),
                    param_schedulers=[dict(last_epoch=3)],
                    ema_state_dict={'x': torch.ones(1)}), path)
    return path


def _tool():
    path = ROOT / 'tools' / 'model_converters' / 'publish_model.py'
    spec = importlib.util.spec_from_file_location('publish_model', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_keeps_weights_and_meta_and_names_the_file_by_its_hash(tmp_path):
    source = _training_checkpoint(tmp_path / 'epoch_3.pth')
    final = Path(_tool().main([str(source), str(tmp_path / 'out' / 'model.pth')]))
    match = re.fullmatch(r'model-([0-9a-f]{8})\.pth', final.name)
    assert match and final.parent == tmp_path / 'out'
    assert hashlib.sha256(final.read_bytes()).hexdigest()[:8] == match.group(1)
    published = load_checkpoint(str(final))  # codetr's weights-only loader
    assert sorted(published) == ['meta', 'state_dict']
    assert sorted(published['state_dict']) == sorted(STATE)
    assert all(torch.equal(published['state_dict'][k], v) for k, v in STATE.items())
    assert published['meta']['dataset_meta'] == dict(classes=('a', 'b'))
    assert published['meta']['epoch'] == 3
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary left


def test_drop_aux_removes_the_collaborative_branch(tmp_path):
    source = _training_checkpoint(tmp_path / 'epoch_3.pth')
    final = _tool().main([str(source), str(tmp_path / 'slim.pth'), '--drop-aux'])
    published = load_checkpoint(final)
    assert sorted(published['state_dict']) == ['backbone.conv.weight', 'query_head.cls.bias']
    assert published['meta']['aux_heads_dropped'] is True


def test_plain_state_dict_and_removed_keys():
    published, removed = strip_checkpoint(dict(STATE))
    assert sorted(published) == ['meta', 'state_dict'] and removed == []
    _, removed = strip_checkpoint(dict(state_dict=STATE, optimizer={}, message_hub={}))
    assert removed == ['message_hub', 'optimizer']
    assert published_name('a/b.pth', 'deadbeef' * 8) == 'a/b-deadbeef.pth'
    assert published_name('model', 'deadbeef' * 8) == 'model-deadbeef.pth'


def test_unreadable_input_is_a_clear_error(tmp_path):
    (tmp_path / 'bad.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='not a readable checkpoint'):
        _tool().main([str(tmp_path / 'bad.pth'), str(tmp_path / 'x.pth')])
