"""Pascal VOC (VOCdevkit with VOC2007 / VOC2012) -> COCO json files, one per year and split.

Example::

    python tools/dataset_converters/pascal_voc.py data/VOCdevkit -o data/VOCdevkit/annotations

writes ``voc07_{train,val,trainval,test}.json``, ``voc12_{train,val,trainval}.json`` and,
with both years, ``voc0712_{train,val,trainval}.json`` (MMDetection's names), from
``VOC<year>/ImageSets/Main/<split>.txt`` and ``VOC<year>/Annotations/*.xml``. Images are
``VOC<year>/JPEGImages/<name>.jpg`` relative to the devkit folder (use it as ``data_root``
with ``data_prefix=dict(img='')``). Coordinates are made 0-based and ``difficult`` objects
become ``iscrowd=1`` (ignored), as in MMDetection; see ``codetr/datasets/voc.py``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmengine.utils import track_iter_progress

from codetr.datasets.voc import SPLITS, VOC_CLASSES, available_years, split_image_names, voc_to_coco

PREFIXES = {('2007',): 'voc07', ('2012',): 'voc12', ('2007', '2012'): 'voc0712'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('devkit', help='VOCdevkit folder holding VOC2007 and/or VOC2012')
    parser.add_argument('-o', '--out-dir', help='output folder (default: DEVKIT/annotations)')
    parser.add_argument('--classes', help='text file, one class name a line '
                        '(default: the 20 VOC classes)')
    return parser.parse_args(argv)


def _jobs(years: list[str]) -> list[tuple[tuple[str, ...], str]]:
    """(years, split) pairs to convert: each year's splits, the union's without test."""
    jobs = [((y,), s) for y in years for s in SPLITS]
    if len(years) == 2:
        jobs += [(tuple(years), s) for s in SPLITS if s != 'test']
    return jobs


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    devkit = Path(args.devkit)
    years = available_years(devkit)
    if not years:
        raise SystemExit(f'{devkit} holds neither VOC2007 nor VOC2012.')
    classes = VOC_CLASSES if not args.classes else tuple(
        n.strip() for n in Path(args.classes).read_text().splitlines() if n.strip())
    out_dir = Path(args.out_dir or devkit / 'annotations')
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for job_years, split in _jobs(years):
        try:
            names = [(y, n) for y in job_years for n in split_image_names(devkit, y, split)]
        except FileNotFoundError as err:
            print(f'skipped: {err}')
            continue
        out = out_dir / f'{PREFIXES[job_years]}_{split}.json'
        print(f'{out.name}: {len(names)} images')
        coco = voc_to_coco(devkit, track_iter_progress(names) if names else names, classes)
        out.write_text(json.dumps(coco))
        print(f'\n{out}: {len(coco["images"])} images, {len(coco["annotations"])} boxes '
              f'({sum(a["iscrowd"] for a in coco["annotations"])} difficult)')
        written.append(str(out))
    return written


if __name__ == '__main__':
    main()
