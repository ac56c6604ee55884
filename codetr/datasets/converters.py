"""Conversion of other annotation formats to COCO json dicts."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from codetr.utils.progress import Progress

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
# EXIF orientations 5-8 rotate by 90 degrees: the decoded image is height x width. Read for
# JPEG only, whose EXIF block precedes the pixels (PIL decodes a PNG to find its eXIf chunk).
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)
_EXIF_IN_HEADER = ('JPEG', 'MPO')


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as codetr's loader will decode it, from its header.

    PIL opens files lazily: only the header is read, no pixel is decoded. A JPEG's EXIF
    orientation of 5-8 swaps the two, because OpenCV (``LoadImageFromFile``) applies it.

    Raises:
        ValueError: naming the file, when it is not an image PIL can read the size of.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = (img.getexif().get(_EXIF_ORIENTATION, 1)
                           if img.format in _EXIF_IN_HEADER else 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f'{path}: cannot read the image size from its header ({err})') from err
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def parse_yolo_row(line: str, num_classes: int) -> tuple[int, list[float]] | str:
    """``'class cx cy w h'`` (normalised) -> ``(class_index, [cx, cy, w, h])``.

    Returns a message saying what is wrong instead when the row is malformed: not five
    fields (polygon rows have more), not numbers, a class index outside
    ``[0, num_classes)``, or a width / height that is not positive.
    """
    fields = line.split()
    if len(fields) != 5:
        return f'expected 5 fields "class cx cy w h", got {len(fields)}'
    try:
        values = [float(v) for v in fields[1:]]
        cls = int(fields[0])
    except ValueError:
        return f'not numbers: {line.strip()!r}'
    if not 0 <= cls < num_classes:
        return f'class index {cls} is outside 0..{num_classes - 1} of the classes file'
    if values[2] <= 0 or values[3] <= 0:
        return f'width and height must be positive, got {values[2]}, {values[3]}'
    return cls, values


def yolo_box_to_coco(cx: float, cy: float, w: float, h: float, width: int,
                     height: int) -> list[float]:
    """Normalised centre box -> COCO ``[x, y, w, h]`` in pixels of a width x height image."""
    return [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]


def _label_file(labels_dir: Path, images_dir: Path, image: Path) -> Path:
    return labels_dir / image.relative_to(images_dir).with_suffix('.txt')


def _convert_labels(label_path: Path, image_id: int, width: int, height: int,
                    num_classes: int, first_ann_id: int,
                    problems: list[str]) -> list[dict]:
    """COCO annotations of one YOLO label file; bad rows go to ``problems`` as file:line."""
    anns = []
    for line_no, line in enumerate(label_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parsed = parse_yolo_row(line, num_classes)
        if isinstance(parsed, str):
            problems.append(f'{label_path}:{line_no}: {parsed}; row skipped')
            continue
        cls, (cx, cy, w, h) = parsed
        bbox = yolo_box_to_coco(cx, cy, w, h, width, height)
        anns.append(dict(id=first_ann_id + len(anns), image_id=image_id, category_id=cls + 1,
                         bbox=bbox, area=bbox[2] * bbox[3], iscrowd=0))
    return anns


def yolo_to_coco(images_dir: str | Path, labels_dir: str | Path, class_names: list[str],
                 image_prefix: str = '', show_progress: bool = False) -> tuple[dict, list[str]]:
    """Convert a YOLO-format dataset to a COCO json dict.

    Args:
        images_dir: folder of images (searched recursively, sorted by path).
        labels_dir: folder mirroring ``images_dir`` with one ``.txt`` per image, one row
            ``class cx cy w h`` per object, coordinates normalised by the image size. An
            image without a label file is an image without objects.
        class_names: the names of the classes file, in index order.
        image_prefix: prepended to each image's path relative to ``images_dir`` to make
            its ``file_name``.
        show_progress: report the images done (:mod:`codetr.utils.progress`).

    Returns:
        ``(coco, problems)``: the COCO dict (category id = class index + 1; image ids from
        1 in path order; ``bbox`` [x, y, w, h] in pixels, ``area`` = w * h, ``iscrowd`` 0)
        and one ``file:line: what`` message per skipped row, unreadable image or label
        file without an image. Image sizes come from the file headers (:func:`image_size`).
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f'images folder {images_dir} does not exist')
    problems: list[str] = []
    coco: dict = dict(images=[], annotations=[],
                      categories=[dict(id=i + 1, name=n) for i, n in enumerate(class_names)])
    paths = sorted(p for p in images_dir.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)
    progress = Progress(len(paths), 'yolo2coco', unit='images',
                        enabled=None if show_progress else False)
    for path in paths:
        progress.update()
        try:
            width, height = image_size(path)
        except ValueError as err:
            problems.append(f'{err}; skipped')
            continue
        image_id = len(coco['images']) + 1
        coco['images'].append(dict(id=image_id, width=width, height=height,
                                   file_name=image_prefix + path.relative_to(images_dir)
                                   .as_posix()))
        label_path = _label_file(labels_dir, images_dir, path)
        if label_path.is_file():
            coco['annotations'] += _convert_labels(label_path, image_id, width, height,
                                                   len(class_names),
                                                   len(coco['annotations']) + 1, problems)
    progress.close()
    stems = {_label_file(labels_dir, images_dir, p) for p in paths}
    problems += [f'{p}: no image with this name in {images_dir}; ignored'
                 for p in sorted(labels_dir.rglob('*.txt')) if p not in stems]
    return coco, problems
