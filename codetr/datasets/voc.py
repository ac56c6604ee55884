"""Pascal VOC (XML per image, ImageSets splits) -> COCO json, with MMDetection's conventions.

- Boxes: VOC pixel coordinates are 1-based and inclusive; as MMDetection's converter does,
  1 is subtracted from every coordinate and the width is ``xmax - xmin`` (so a box keeps
  its VOC width, and ``[x, y]`` becomes 0-based).
- ``difficult`` objects are kept with ``iscrowd=1`` (COCO evaluation ignores them, and
  codetr's datasets load them as ignored boxes), as MMDetection's converter marks them.
- Ids start at 1 (images, annotations, categories): COCOeval reads annotation id 0 as
  "unmatched", which MMDetection's 0-based ids run into.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

from .image_folder import image_size

VOC_CLASSES: tuple[str, ...] = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
    'train', 'tvmonitor')
SPLITS = ('train', 'val', 'trainval', 'test')


def split_image_names(devkit: str | Path, year: str, split: str) -> list[str]:
    """Image names listed in ``VOC<year>/ImageSets/Main/<split>.txt``."""
    path = Path(devkit) / f'VOC{year}' / 'ImageSets' / 'Main' / f'{split}.txt'
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist: VOC{year} has no {split} split here')
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _number(node: ET.Element, tag: str, xml_path: Path) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f'{xml_path}: <{node.tag}> has no <{tag}>')
    try:
        return float(child.text)
    except ValueError as err:
        raise ValueError(f'{xml_path}: <{tag}> is not a number: {child.text!r}') from err


def parse_voc_xml(xml_path: Path, label_of: dict[str, int]) -> tuple[dict, list[dict]]:
    """``(size dict(width, height) from <size>, objects)`` of one VOC XML file.

    Each object is ``dict(label, bbox=[x, y, w, h] 0-based pixels, difficult=bool)``; a
    name outside ``label_of`` raises, naming the file and the class.
    """
    root = ET.parse(xml_path).getroot()
    size = root.find('size')
    width = int(_number(size, 'width', xml_path)) if size is not None else 0
    height = int(_number(size, 'height', xml_path)) if size is not None else 0
    objects = []
    for obj in root.findall('object'):
        name = (obj.findtext('name') or '').strip()
        if name not in label_of:
            raise ValueError(f'{xml_path}: object class {name!r} is not one of the '
                             f'{len(label_of)} classes ({", ".join(label_of)})')
        box = obj.find('bndbox')
        if box is None:
            raise ValueError(f'{xml_path}: object {name!r} has no <bndbox>')
        x1, y1, x2, y2 = (_number(box, t, xml_path) - 1 for t in ('xmin', 'ymin', 'xmax',
                                                                 'ymax'))
        difficult = (obj.findtext('difficult') or '0').strip() == '1'
        objects.append(dict(label=label_of[name], bbox=[x1, y1, x2 - x1, y2 - y1],
                            difficult=difficult))
    return dict(width=width, height=height), objects


def voc_to_coco(devkit: str | Path, image_names: Iterable[tuple[str, str]],
                classes: Sequence[str] = VOC_CLASSES) -> dict:
    """COCO dict of the ``(year, name)`` images of a VOCdevkit folder.

    ``file_name`` is ``VOC<year>/JPEGImages/<name>.jpg`` (relative to ``devkit``); the size
    is the XML's ``<size>``, or the image header's where the XML has none (or zeros).
    """
    devkit = Path(devkit)
    label_of = {name: i for i, name in enumerate(classes)}
    coco: dict = dict(images=[], annotations=[],
                      categories=[dict(id=i + 1, name=n, supercategory='none')
                                  for i, n in enumerate(classes)])
    for year, name in image_names:
        xml_path = devkit / f'VOC{year}' / 'Annotations' / f'{name}.xml'
        if not xml_path.is_file():
            raise FileNotFoundError(f'{xml_path} is listed in VOC{year}/ImageSets but missing')
        size, objects = parse_voc_xml(xml_path, label_of)
        file_name = f'VOC{year}/JPEGImages/{name}.jpg'
        if size['width'] <= 0 or size['height'] <= 0:
            size['width'], size['height'] = image_size(devkit / file_name)
        image_id = len(coco['images']) + 1
        coco['images'].append(dict(id=image_id, file_name=file_name, **size))
        for obj in objects:
            x, y, w, h = obj['bbox']
            coco['annotations'].append(dict(
                id=len(coco['annotations']) + 1, image_id=image_id,
                category_id=obj['label'] + 1, bbox=[x, y, w, h], area=w * h,
                iscrowd=int(obj['difficult']), ignore=0))
    return coco


def available_years(devkit: str | Path) -> list[str]:
    """The VOC years (``'2007'``, ``'2012'``) whose folders exist under ``devkit``."""
    return [y for y in ('2007', '2012') if (Path(devkit) / f'VOC{y}').is_dir()]
