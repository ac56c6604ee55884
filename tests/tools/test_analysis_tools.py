"""The analysis tools end to end on a tiny synthetic set and the quick-start Co-DINO:
tools/test.py --tta --out, eval_metric.py, confusion_matrix.py, analyze_results.py, --help."""
from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator

from codetr.analysis.common import gt_arrays
from codetr.analysis.confusion_matrix import accumulate_image
from codetr.datasets.synthetic import make_synthetic_dataset
from codetr.evaluation import CocoMetric, load_det_results
from codetr.registry import DATASETS, MODELS

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_quickstart_synthetic.py'
CLASSES = ('circle', 'square', 'triangle', 'star', 'cross', 'ring', 'hexagon', 'ellipse')
NEW_TOOLS = ('tools/analysis_tools/get_flops.py', 'tools/analysis_tools/confusion_matrix.py',
             'tools/analysis_tools/analyze_results.py', 'tools/analysis_tools/eval_metric.py',
             'tools/analysis_tools/coco_error_analysis.py',
             'tools/model_converters/publish_model.py',
             'tools/dataset_converters/images2coco.py', 'tools/dataset_converters/pascal_voc.py')


def load_tool(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + '_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('relative', NEW_TOOLS)
def test_help(relative, capsys):
    module = load_tool(relative)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(['--help'])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    # argparse re-wraps the description (also at hyphens): compare without whitespace
    assert out.startswith('usage:')
    assert ''.join(module.__doc__.splitlines()[0].split()) in ''.join(out.split())


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> dict:
    """3 synthetic val images (64..96 px), a config reading them, and its ground truth."""
    root = tmp_path_factory.mktemp('analysis_tools')
    ann_file = make_synthetic_dataset(root / 'data', 0, 3, seed=2, min_size=64,
                                      max_size=96)['val']
    config = root / 'quickstart_tiny.py'
    config.write_text(f"""_base_ = [{str(QUICKSTART)!r}]
data_root = {str(root / 'data')!r} + '/'
test_dataloader = dict(batch_size=3, dataset=dict(data_root=data_root, serialize_data=False))
test_evaluator = dict(ann_file={str(ann_file)!r})
work_dir = {str(root / 'work')!r}
""")
    coco = json.loads(Path(ann_file).read_text())
    return dict(root=root, config=str(config), coco=coco)


def _gt_records(coco: dict) -> list[dict]:
    """Predictions made from the ground truth: image 1 perfect, image 2 every box shifted by
    its own size (no hit), image 3 the boxes with the next class."""
    records = []
    for n, image in enumerate(coco['images']):
        anns = [a for a in coco['annotations'] if a['image_id'] == image['id']]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)])
        labels = np.array([a['category_id'] - 1 for a in anns])  # ids 1..8 in class order
        if n == 1:
            boxes = boxes + np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        if n == 2:
            labels = (labels + 1) % len(CLASSES)
        records.append(dict(img_id=image['id'], img_path=image['file_name'],
                            ori_shape=(image['height'], image['width']),
                            pred_instances=dict(bboxes=boxes.astype(np.float32),
                                                scores=np.linspace(0.9, 0.5, len(anns)),
                                                labels=labels)))
    return records


@pytest.fixture(scope='module')
def predictions(data) -> str:
    path = data['root'] / 'gt_predictions.pkl'
    path.write_bytes(pickle.dumps(_gt_records(data['coco'])))
    return str(path)


def test_eval_metric_equals_the_metric_computed_directly(data, predictions):
    metrics = load_tool('tools/analysis_tools/eval_metric.py').main(
        [data['config'], predictions])
    metric = CocoMetric(ann_file=Config.fromfile(data['config']).test_evaluator.ann_file)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, load_det_results(predictions))
    direct = metric.evaluate(3)
    assert metrics == direct
    # 1 of 3 images right: AP50 = 1/3 per class with boxes in image 1 ... but above 0, below 1
    assert 0 < metrics['coco/bbox_mAP_50'] < 1


def test_confusion_matrix_tool(data, predictions):
    out = data['root'] / 'confusion'
    paths = load_tool('tools/analysis_tools/confusion_matrix.py').main(
        [data['config'], predictions, '--out-dir', str(out), '--score-thr', '0'])
    counts = np.array(json.loads(Path(paths['json']).read_text())['counts'])
    expected = np.zeros((9, 9), np.int64)
    infos = {im['id']: dict(instances=[
        dict(bbox=[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                   a['bbox'][1] + a['bbox'][3]], bbox_label=a['category_id'] - 1,
             ignore_flag=a.get('iscrowd', 0))
        for a in data['coco']['annotations'] if a['image_id'] == im['id']])
        for im in data['coco']['images']}
    for record in _gt_records(data['coco']):
        pred = {k: np.asarray(v, np.float64 if k != 'labels' else np.int64)
                for k, v in record['pred_instances'].items()}
        accumulate_image(expected, gt_arrays(infos[record['img_id']]), pred, score_thr=0)
    assert (counts == expected).all()
    num_gt = [sum(a['image_id'] == im['id'] for a in data['coco']['annotations'])
              for im in data['coco']['images']]
    assert np.trace(counts[:8, :8]) >= num_gt[0]  # the perfect image's boxes are all found
    assert counts[:8, 8].sum() >= num_gt[1] + num_gt[2]  # the others' are all missed
    assert Path(paths['png']).stat().st_size > 0 and Path(paths['csv']).is_file()


def test_analyze_results_ranks_the_perfect_image_first(data, predictions):
    out = data['root'] / 'analysis'
    table = load_tool('tools/analysis_tools/analyze_results.py').main(
        [data['config'], predictions, '--out-dir', str(out), '--topk', '1'])
    first_id = data['coco']['images'][0]['id']
    assert table[0]['img_id'] == first_id and table[0]['ap'] == pytest.approx(1.0)
    assert table[-1]['ap'] == 0.0
    assert json.loads((out / 'per_image_ap.json').read_text()) == table
    best, = (out / 'best').glob('*.png')
    worst, = (out / 'worst').glob('*.png')
    assert best.name.startswith('000_') and best.name.endswith('_ap1.000.png')
    assert worst.name.endswith('_ap0.000.png')
    import cv2
    image = data['coco']['images'][0]
    assert cv2.imread(str(best)).shape == (image['height'], 2 * image['width'] + 8, 3)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
    """Random quick-start weights (a trained model is not needed to run the tools)."""
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(QUICKSTART).model)
    path = tmp_path_factory.mktemp('ckpt') / 'quickstart.pth'
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


def _check_tta_records(records: list[dict]) -> None:
    assert len(records) == 3
    for record in records:  # merged views: at most max_per_img, inside the image
        height, width = record['ori_shape']
        boxes = record['pred_instances']['bboxes']
        assert 0 < len(boxes) <= 30
        assert boxes.min() >= 0 and (boxes[:, [0, 2]] <= width + 1e-3).all()
        assert (boxes[:, [1, 3]] <= height + 1e-3).all()


def test_test_py_tta_config_runs_and_evaluates(data, checkpoint, tmp_path):
    """What the Runner does with tools/test.py --tta, without the Runner's set-up cost."""
    test_tool = load_tool('tools/test.py')
    out = tmp_path / 'tta.pkl'
    cfg = test_tool.build_cfg(test_tool.parse_args(
        [data['config'], checkpoint, '--tta', '--out', str(out)]))
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module.type == 'CoDETR'
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'
    model = MODELS.build(cfg.model).eval()
    model.module.load_state_dict(torch.load(checkpoint)['state_dict'])
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    batch = pseudo_collate([dataset[i] for i in range(len(dataset))])
    assert len(batch['inputs']) == 2  # two views: plain and flipped
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = dataset.metainfo
    with torch.no_grad():
        evaluator.process(model.test_step(batch), batch)
    metrics = evaluator.evaluate(len(dataset))
    assert set(metrics) >= {'coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'}
    _check_tta_records(load_det_results(str(out)))
    again = load_tool('tools/analysis_tools/eval_metric.py').main([data['config'], str(out)])
    assert again == metrics


@pytest.mark.slow
def test_test_py_tta_end_to_end_and_eval_metric_reproduces_it(data, checkpoint, tmp_path):
    out = tmp_path / 'tta.pkl'
    printed = load_tool('tools/test.py').main(
        [data['config'], checkpoint, '--tta', '--out', str(out), '--work-dir',
         str(tmp_path / 'work')])
    assert set(printed) >= {'coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'}
    _check_tta_records(load_det_results(str(out)))
    again = load_tool('tools/analysis_tools/eval_metric.py').main([data['config'], str(out)])
    assert again == printed
