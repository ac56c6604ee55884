"""Official checkpoints load, and give the MMDetection port's detections and losses.

The fixture (``fixtures/co_dino_tiny_mmdet3``, see its README) holds a small Co-DINO's
weights in the port's key layout and the port's outputs. Here the weights go through
:func:`convert_official` into the model of ``configs/tests/co_dino_tiny_fixture.py``, and
codetr's own data preprocessor and model must reproduce, within the fixture's tolerance,
the detections of the three evaluation modes and every loss term the fixture kept.

Note on the fixture: its reference ran the port's model after a float16 round trip, which
also rounded the data preprocessor's mean / std buffers; the fixture config uses those
rounded values (with the official ones, inputs differ by up to 7e-4 and the last decoder
layer's QFL by 1.4e-3 relative).
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment

from codetr.models.converters import (
    CheckpointConversionError,
    convert_official,
    drop_aux,
    official_head_order,
)
from codetr.registry import MODELS
from codetr.structures import DetDataSample

FIXTURE = 'fixtures/co_dino_tiny_mmdet3'
FIXTURE_CONFIG = 'configs/tests/co_dino_tiny_fixture.py'
R50_CONFIG = 'configs/co_dino/co_dino_5scale_r50_8xb2_1x_coco.py'
R50_KEYS = 'reference/co_dino_5scale_r50_mmdet3_state_dict.tsv'
CO_DEFORM_CONFIG = 'configs/co_deformable_detr/co_deformable_detr_r50_8xb2_1x_coco.py'
QUICKSTART_K2 = 'configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py'
# Fixture README: boxes within 1e-3 px, scores within 1e-4, loss terms within 1e-4 relative.
BOX_ATOL, SCORE_ATOL, LOSS_RTOL = 1e-3, 1e-4, 1e-4
# The port's loss names -> codetr's. The port suffixes aux losses with the official head
# index (0 = Faster R-CNN, 1 = ATSS) and folds x12 into their weights; the fixture config's
# lambda_2 * 2 decoder layers = 12 applies the same factor (see the config).
LOSS_KEYS = {
    **{f'{p}loss_{n}': f'{p}loss_{n}' for p in ('', 'd0.', 'enc_') for n in ('cls', 'bbox', 'iou')},
    'atss.loss_cls': 'loss_cls1', 'atss.loss_bbox': 'loss_bbox1',
    'atss.loss_centerness': 'loss_centerness1',
    **{f'atss.pos.{p}loss_{n}': f'{p}loss_{n}_aux1' for p in ('', 'd0.')
       for n in ('cls', 'bbox', 'iou')},
    'rcnn.loss_rpn_bbox': 'loss_rpn_bbox', 'rcnn.loss_bbox': 'loss_bbox0',
}


@pytest.fixture(scope='module')
def fixture_dir(shared_dir: Path) -> Path:
    path = shared_dir / FIXTURE
    if not path.is_dir():
        pytest.skip(f'{path} is not present')
    return path


@pytest.fixture(scope='module')
def port_weights(fixture_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(fixture_dir / 'weights_mmdet3.pth', weights_only=True)


def _build(repo_root: Path, weights: dict, eval_module: str = 'detr'):
    cfg = Config.fromfile(repo_root / FIXTURE_CONFIG)
    cfg.model.test_cfg.eval_module = eval_module
    model = MODELS.build(cfg.model)
    model.load_state_dict(convert_official(weights, model), strict=True)
    return model


def _preprocess(model, batch: dict, training: bool) -> dict:
    samples = []
    for meta in batch['metas']:
        sample = DetDataSample(metainfo=meta)
        if 'gt_bboxes' in batch:
            sample.gt_instances = InstanceData(bboxes=batch['gt_bboxes'].float(),
                                               labels=batch['gt_labels'].long())
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=batch['images'], data_samples=samples), training)


def _by_score(bboxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor):
    """Detections sorted by descending score, ties by box (x1, y1, x2, y2)."""
    order = torch.arange(len(scores))
    for column in (3, 2, 1, 0):  # stable sorts, least significant key first
        order = order[torch.sort(bboxes[order, column], stable=True)[1]]
    order = order[torch.sort(scores[order], descending=True, stable=True)[1]]
    return bboxes[order], scores[order], labels[order]


def test_fixture_weights_convert_with_no_missing_or_unexpected_keys(repo_root, port_weights):
    cfg = Config.fromfile(repo_root / FIXTURE_CONFIG)
    model = MODELS.build(cfg.model)
    assert official_head_order(model) == ['rcnn', 'atss']
    converted = convert_official(port_weights, model)
    assert len(converted) == len(port_weights) == 292
    assert set(converted) == set(model.state_dict())
    result = model.load_state_dict(converted, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    torch.testing.assert_close(model.adapter.downsample[0][0].weight,
                               port_weights['query_head.downsample.0.weight'].float())
    torch.testing.assert_close(
        model.query_head.pos_query_generators['atss'].pos_trans.weight,
        port_weights['query_head.transformer.aux_pos_trans.1.weight'].float())


@pytest.mark.parametrize('mode', ['detr', 'one-stage', 'two-stage'])
@torch.no_grad()
def test_detections_match_the_port(repo_root, fixture_dir, port_weights, mode: str):
    inputs = torch.load(fixture_dir / 'inputs.pth', weights_only=True)
    outputs = torch.load(fixture_dir / 'outputs.pth', weights_only=True)
    model = _build(repo_root, port_weights, mode).eval()
    data = _preprocess(model, inputs, training=False)
    torch.testing.assert_close(data['inputs'], outputs['preprocessed_inputs'], atol=1e-5,
                               rtol=0)
    results = model(**data, mode='predict')
    for sample, ref in zip(results, outputs[mode]):
        pred = sample.pred_instances
        assert len(pred) == len(ref['scores']) == (300 if mode == 'detr' else 100)
        ours = _by_score(pred.bboxes, pred.scores, pred.labels)
        theirs = _by_score(ref['bboxes'], ref['scores'], ref['labels'])
        torch.testing.assert_close(ours[1], theirs[1], atol=SCORE_ATOL, rtol=0)
        _assert_same_detections(ours, theirs)


def _assert_same_detections(ours: tuple, theirs: tuple) -> None:
    """One-to-one: every reference detection has one of ours with its label, a score within
    SCORE_ATOL and a box within BOX_ATOL. Detections whose scores tie to float rounding may
    come in either order (a last-bit change upstream swaps them), so they are matched, not
    compared position by position."""
    box_diff = (ours[0][:, None] - theirs[0][None]).abs().amax(-1)
    score_diff = (ours[1][:, None] - theirs[1][None]).abs()
    same = (box_diff <= BOX_ATOL) & (score_diff <= SCORE_ATOL) & (
        ours[2][:, None] == theirs[2][None])
    cost = torch.where(same, box_diff + score_diff, torch.full_like(box_diff, 1e6))
    rows, cols = linear_sum_assignment(cost.numpy())
    assert len(rows) == len(theirs[1])
    unmatched = [(int(r), int(c)) for r, c in zip(rows, cols) if not same[r, c]]
    assert not unmatched, (f'{len(unmatched)} detections differ, e.g. ours '
                           f'{ours[0][unmatched[0][0]].tolist()} vs theirs '
                           f'{theirs[0][unmatched[0][1]].tolist()}')


@torch.no_grad()
def test_training_losses_match_the_port(repo_root, fixture_dir, port_weights):
    batch = torch.load(fixture_dir / 'train_losses.pth', weights_only=True)
    model = _build(repo_root, port_weights).train()  # BN frozen (norm_eval), dropout 0
    torch.manual_seed(0)  # denoising / sampling draws; no kept term depends on them
    losses = model(**_preprocess(model, batch, training=True), mode='loss')
    assert set(batch['losses']) == set(LOSS_KEYS.values())
    for ours, theirs in LOSS_KEYS.items():
        assert losses[ours].item() == pytest.approx(batch['losses'][theirs], rel=LOSS_RTOL), ours


def _r50_official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Random tensors with the port's Co-DINO R50 keys and shapes (BN counters as int64)."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for line in path.read_text().splitlines():
        key, shape = line.split('\t')
        dims = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
        state[key] = (torch.zeros(dims, dtype=torch.long) if key.endswith('num_batches_tracked')
                      else torch.randn(dims, generator=generator))
    return state


def test_r50_official_layout_loads_strictly_into_the_r50_config(repo_root, shared_dir):
    keys_file = shared_dir / R50_KEYS
    if not keys_file.is_file():
        pytest.skip(f'{keys_file} is not present')
    cfg = Config.fromfile(repo_root / R50_CONFIG)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    official = _r50_official_state_dict(keys_file)
    converted = convert_official(official, model)
    assert model.load_state_dict(converted, strict=True).missing_keys == []
    torch.testing.assert_close(model.aux_heads['rcnn'].rpn_head.rpn_conv.weight,
                               official['rpn_head.rpn_conv.weight'])
    torch.testing.assert_close(model.aux_heads['atss'].atss_cls.weight,
                               official['bbox_head.0.atss_cls.weight'])
    # Deployment: the K = 0 model of the same config loads the stripped state dict strictly.
    cfg.model.aux_heads, cfg.model.adapter = {}, None
    plain = MODELS.build(cfg.model)
    plain.load_state_dict(drop_aux(converted), strict=True)


def test_conversion_errors_name_the_keys_and_shapes(repo_root, port_weights):
    cfg = Config.fromfile(repo_root / FIXTURE_CONFIG)
    model = MODELS.build(cfg.model)
    bad = dict(port_weights)
    bad['rpn_head.rpn_cls.weight'] = torch.zeros(5, 256, 1, 1)
    with pytest.raises(CheckpointConversionError,
                       match=r'aux_heads\.rcnn\.rpn_head\.rpn_cls\.weight \(official '
                             r'rpn_head\.rpn_cls\.weight\): checkpoint \(5, 256, 1, 1\) vs '
                             r'model \(9, 256, 1, 1\)'):
        convert_official(bad, model)
    partial = {k: v for k, v in port_weights.items() if not k.startswith('bbox_head.0.scales')}
    partial['bbox_head.1.atss_cls.weight'] = port_weights['bbox_head.0.atss_cls.weight']
    with pytest.raises(CheckpointConversionError) as err:
        convert_official(partial, model)
    assert 'bbox_head.1.atss_cls.weight' in str(err.value)  # no second one-stage head
    assert 'aux_heads.atss.scales.0.scale' in str(err.value)  # missing from the checkpoint
    lenient = convert_official(partial, model, strict=False)
    assert 'aux_heads.atss.scales.0.scale' not in lenient
    with pytest.raises(CheckpointConversionError, match='aux_head_order'):
        convert_official(port_weights, model, aux_head_order=['atss'])


def _to_official(state: dict[str, torch.Tensor], order: list[str]) -> dict[str, torch.Tensor]:
    """codetr -> official names for a model with aux heads ``rcnn`` (two-stage) and ``atss``."""
    out, head_pos = {}, {}
    family = {'pos_trans': 'aux_pos_trans', 'pos_trans_norm': 'aux_pos_trans_norm',
              'feats_trans': 'pos_feats_trans', 'feats_norm': 'pos_feats_norm'}
    for key, value in state.items():
        if key.startswith('adapter.downsample.0.'):
            key = 'query_head.downsample.' + key.removeprefix('adapter.downsample.0.')
        elif key.startswith('aux_heads.rcnn.'):
            key = key.removeprefix('aux_heads.rcnn.').replace('roi_head.', 'roi_head.0.', 1)
        elif key.startswith('aux_heads.atss.'):
            key = 'bbox_head.0.' + key.removeprefix('aux_heads.atss.')
        elif key.startswith('query_head.pos_query_generators.'):
            name, param, *rest = key.removeprefix('query_head.pos_query_generators.').split('.')
            if param == 'head_pos_embed':
                head_pos[order.index(name)] = value
                continue
            key = f'query_head.transformer.{family[param]}.{order.index(name)}.{rest[0]}'
        out[key] = value.clone()
    if head_pos:  # the official nn.Embedding(K, D): one row per head
        out['query_head.transformer.head_pos_embed.weight'] = torch.stack(
            [head_pos[i] for i in range(len(head_pos))])
    return out


def test_co_deformable_detr_official_layout_round_trips(repo_root):
    cfg = Config.fromfile(repo_root / CO_DEFORM_CONFIG)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    state = model.state_dict()
    embeds = [k for k in state if k.endswith('head_pos_embed')]
    for i, name in enumerate(embeds):  # distinct values, so swapped rows would show
        state[name].fill_(i + 1.0)
    official = _to_official(state, official_head_order(model))
    assert official['query_head.transformer.head_pos_embed.weight'].shape == (2, 1)
    assert 'query_head.transformer.pos_feats_trans.1.weight' in official
    converted = convert_official(official, model)
    assert converted.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(converted[key], value), key


def test_runner_load_from_converts_an_official_checkpoint(repo_root, tmp_path):
    cfg = Config.fromfile(repo_root / QUICKSTART_K2)
    source = MODELS.build(cfg.model)
    official = _to_official(source.state_dict(), official_head_order(source))
    assert not any(k.startswith(('aux_heads.', 'adapter.')) for k in official)
    torch.save({'state_dict': official, 'meta': {}}, tmp_path / 'official.pth')
    runner = Runner(
        model=copy.deepcopy(cfg.model), work_dir=str(tmp_path / 'work'),
        load_from=str(tmp_path / 'official.pth'),
        custom_hooks=[dict(type='OfficialCheckpointHook')],
        default_scope='codetr', default_hooks=dict(), env_cfg=dict(dist_cfg=dict(backend='gloo')))
    runner.load_or_resume()
    loaded = runner.model.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key


def _converter_tool(repo_root: Path):
    path = repo_root / 'tools' / 'model_converters' / 'codetr_official_to_codetr.py'
    spec = importlib.util.spec_from_file_location('codetr_official_to_codetr', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converter_tool_writes_full_and_deployment_checkpoints(repo_root, tmp_path):
    config = str(repo_root / QUICKSTART_K2)
    source = MODELS.build(Config.fromfile(config).model)
    official = _to_official(source.state_dict(), official_head_order(source))
    src = tmp_path / 'official.pth'
    torch.save({'state_dict': official, 'meta': {'CLASSES': ('a', 'b')}}, src)
    tool = _converter_tool(repo_root)

    tool.main([config, str(src), str(tmp_path / 'full.pth')])
    full = torch.load(tmp_path / 'full.pth', weights_only=True)
    assert full['meta']['dataset_meta'] == {'classes': ('a', 'b')}
    assert full['state_dict'].keys() == source.state_dict().keys()

    tool.main([config, str(src), str(tmp_path / 'deploy.pth'), '--drop-aux'])
    deploy = torch.load(tmp_path / 'deploy.pth', weights_only=True)['state_dict']
    expected = {k for k in source.state_dict() if not k.startswith(
        ('aux_heads.', 'adapter.', 'query_head.pos_query_generators.'))}
    assert set(deploy) == expected
    with pytest.raises(SystemExit, match='already a codetr file'):
        tool.main([config, str(tmp_path / 'full.pth'), str(tmp_path / 'again.pth')])
