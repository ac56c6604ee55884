"""COCO error breakdown on hand-made cases: each relaxation recovers its own kind of error."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from codetr.analysis import coco_errors
from codetr.analysis.coco_errors import check_detections, error_curves, summarise

ROOT = Path(__file__).resolve().parents[2]
IMAGES = [dict(id=i, width=100, height=100, file_name=f'{i}.jpg') for i in (1, 2)]
CATEGORIES = [dict(id=1, name='cat', supercategory='animal'),
              dict(id=2, name='dog', supercategory='animal'),
              dict(id=3, name='car', supercategory='vehicle')]
ANNOTATIONS = [dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 40, 40]),
               dict(id=2, image_id=2, category_id=3, bbox=[50, 50, 30, 30]),
               dict(id=3, image_id=2, category_id=2, bbox=[0, 0, 20, 20])]
GT = dict(images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES)
PERFECT = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                score=0.9) for a in ANNOTATIONS]


def _summary(dets):
    curves, cat_ids = error_curves(GT, dets, progress=False)
    return summarise(curves, cat_ids, {c['id']: c['name'] for c in CATEGORIES})


def test_perfect_predictions_give_c75_of_one():
    overall = _summary(PERFECT)['overall']
    assert overall['all'] == pytest.approx(dict(C75=1, C50=1, Loc=1, Sim=1, Oth=1, BG=1, FN=1))
    # every box is 400..1600 px^2: small (< 32^2) and medium only
    assert overall['small']['C75'] == pytest.approx(1.0)
    assert overall['large']['C75'] is None


def test_iou_06_boxes_move_from_c75_to_c50():
    shifted = [dict(d, bbox=[*d['bbox'][:3], d['bbox'][3] * 0.6]) for d in PERFECT]  # IoU 0.6
    overall = _summary(shifted)['overall']['all']
    assert overall['C75'] == 0.0
    assert overall['C50'] == pytest.approx(1.0) and overall['Loc'] == pytest.approx(1.0)


def test_wrong_class_recovered_by_oth_and_similar_class_by_sim():
    # The car box detected as 'cat' (another supercategory) above the true cat.
    wrong = [PERFECT[0], dict(PERFECT[1], category_id=1, score=0.95), PERFECT[2]]
    cat = _summary(wrong)['per_class']['cat']['all']
    assert cat['C75'] == pytest.approx(0.5) and cat['Loc'] == pytest.approx(0.5)
    assert cat['Sim'] == pytest.approx(0.5)  # vehicle != animal: not forgiven here
    assert cat['Oth'] == pytest.approx(1.0)
    # The dog box detected as 'cat': same supercategory, forgiven by Sim already.
    similar = [PERFECT[0], dict(PERFECT[2], category_id=1, score=0.95), PERFECT[1]]
    cat = _summary(similar)['per_class']['cat']['all']
    assert cat['Loc'] == pytest.approx(0.5) and cat['Sim'] == pytest.approx(1.0)
    # the missed dog: nothing but FN recovers it
    dog = _summary(similar)['per_class']['dog']['all']
    assert dog['Oth'] == 0.0 and dog['BG'] == 0.0 and dog['FN'] == 1.0


def test_background_false_positive_recovered_by_bg():
    dets = PERFECT + [dict(image_id=1, category_id=3, bbox=[60, 0, 30, 30], score=0.99)]
    car = _summary(dets)['per_class']['car']['all']
    assert car['Oth'] == pytest.approx(0.5) and car['BG'] == 1.0


def test_tool_writes_pngs_and_json(tmp_path):
    (tmp_path / 'gt.json').write_text(json.dumps(GT))
    (tmp_path / 'dets.json').write_text(json.dumps(PERFECT))
    path = ROOT / 'tools' / 'analysis_tools' / 'coco_error_analysis.py'
    spec = importlib.util.spec_from_file_location('coco_error_analysis', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'out'
    summary = tool.main([str(tmp_path / 'dets.json'), str(tmp_path / 'gt.json'),
                         '--out-dir', str(out), '--no-class-plots'])
    assert summary['overall']['all']['C75'] == pytest.approx(1.0)
    saved = json.loads((out / 'error_analysis.json').read_text())
    assert saved['error_types'] == ['C75', 'C50', 'Loc', 'Sim', 'Oth', 'BG', 'FN']
    assert saved['per_class']['car']['all']['C50'] == pytest.approx(1.0)
    assert sorted(p.name for p in out.glob('overall-*.png')) == [
        'overall-all.png', 'overall-large.png', 'overall-medium.png', 'overall-small.png']
    assert (out / 'overall-all.png').read_bytes()[:4] == b'\x89PNG'


def test_class_plots_only_where_the_class_has_boxes(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(coco_errors, 'plot_curves', lambda r, ps, title, path: drawn.append(
        Path(path).relative_to(tmp_path).as_posix()))
    coco_errors.write_error_analysis(GT, PERFECT, str(tmp_path))
    per_class = sorted(p for p in drawn if p.startswith('per_class/'))
    # the 40 x 40 cat is medium, the 30 x 30 car and 20 x 20 dog small (< 32^2); none large
    assert per_class == ['per_class/car-all.png', 'per_class/car-small.png',
                         'per_class/cat-all.png', 'per_class/cat-medium.png',
                         'per_class/dog-all.png', 'per_class/dog-small.png']


def test_predictions_of_another_split_are_refused():
    with pytest.raises(ValueError, match=r'image_ids \[9\] are not in the annotation file'):
        check_detections([dict(PERFECT[0], image_id=9)], GT, 'dets.json')
    with pytest.raises(ValueError, match='not a COCO result list'):
        check_detections({'images': []}, GT, 'dets.json')
