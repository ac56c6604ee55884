"""Convert a YOLO-format dataset (one ``class cx cy w h`` row per object) to a COCO json.

Example::

    python tools/dataset_converters/yolo2coco.py --images data/coco128/images/train2017 \
        --labels data/coco128/labels/train2017 --classes data/coco128/classes.txt \
        --out data/coco128/annotations/train.json

Rows with a bad class index or a malformed format are reported as ``file:line`` and skipped.
Image sizes are read from the file headers (no image is decoded); a progress line reports
the images done.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codetr.datasets.converters import yolo_to_coco


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', required=True, help='folder of images')
    parser.add_argument('--labels', required=True, help='folder of YOLO .txt label files')
    parser.add_argument('--classes', required=True, help='text file, one class name a line')
    parser.add_argument('--out', required=True, help='COCO json to write')
    parser.add_argument('--image-prefix', default='',
                        help="prepended to each image's path relative to --images")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in Path(args.classes).read_text().splitlines() if n.strip()]
    coco, problems = yolo_to_coco(args.images, args.labels, names, args.image_prefix,
                                  show_progress=True)
    for problem in problems:
        print(problem, file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    print(f'{out}: {len(coco["images"])} images, {len(coco["annotations"])} boxes, '
          f'{len(names)} classes, {len(problems)} problem(s) reported')
    return 0


if __name__ == '__main__':
    sys.exit(main())
