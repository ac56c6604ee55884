"""A folder of images -> an unlabelled COCO json, for inference or pseudo-labelling.

Example::

    python tools/dataset_converters/images2coco.py data/unlabelled/images \\
        data/pets/classes.txt data/unlabelled/annotations/images.json

    python tools/test.py CONFIG CKPT --cfg-options \\
        test_dataloader.dataset.data_root=data/unlabelled/ \\
        test_dataloader.dataset.ann_file=annotations/images.json \\
        test_dataloader.dataset.data_prefix.img=images/ \\
        test_evaluator.format_only=True test_evaluator.outfile_prefix=work_dirs/pseudo

The json lists every image (recursively, sorted by path) with its size, read from the file
header without decoding the pixels, no annotations, and the classes of CLASSES_TXT (one name
a line, ids from 1).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmengine.utils import track_iter_progress

from codetr.datasets.image_folder import images_to_coco, list_images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('img_dir', help='folder of images (searched recursively)')
    parser.add_argument('classes', help='text file, one class name a line')
    parser.add_argument('out', help='COCO json to write')
    parser.add_argument('--exclude-extensions', nargs='+', default=[],
                        help='image suffixes to skip, e.g. .tif .bmp')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    names = [n.strip() for n in Path(args.classes).read_text().splitlines() if n.strip()]
    paths = list_images(args.img_dir, args.exclude_extensions)
    coco = images_to_coco(args.img_dir, names, args.exclude_extensions,
                          paths=track_iter_progress(paths) if paths else paths)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    print(f'\n{out}: {len(coco["images"])} images, {len(names)} classes, no annotations')
    return coco


if __name__ == '__main__':
    main()
