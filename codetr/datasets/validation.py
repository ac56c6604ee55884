"""Checks run while a detection dataset loads its annotation file.

Problems that would silently corrupt training or evaluation raise with a message that names
the file, the offending entry and what to change: a file that is not JSON or lacks
``images`` / ``annotations`` / ``categories``, a file without images, repeated image or
category ids, a record without its id, config class names that are not in the file, a
malformed box, a missing image with ``check_files=True``. Problems with one sensible repair
are repaired or dropped and counted in a :class:`ValidationReport`, logged as one line plus
one line per kind naming the first few entries by id: boxes with NaN / infinite coordinates,
zero-size boxes, boxes past the image border, annotations of unknown categories or images,
repeated annotation ids.
"""
from __future__ import annotations

import difflib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from mmengine import fileio
from mmengine.logging import MMLogger, print_log

# How many names / paths an error message spells out before it summarises the rest.
_MAX_LISTED = 100
_MAX_LISTED_FILES = 5
# How many entries of each kind a report names (by id) in its log line.
MAX_NAMED = 5
# Clipping by less than this many pixels is float rounding in converted files, not news.
CLIP_TOLERANCE_PX = 1.0

# Counts that name their first entries, what those entries are, and what loading did.
_NAMED_KINDS = {
    'nonfinite_boxes': ('annotation ids', 'dropped: a bbox coordinate is NaN or infinite'),
    'degenerate_boxes': ('annotation ids',
                         'dropped: width or height <= 0, or wholly outside the image'),
    'clipped_boxes': ('annotation ids', 'clipped to the image border'),
    'unknown_category_anns': ('annotation ids',
                              'dropped: their category_id is not in "categories"'),
    'unknown_image_anns': ('annotation ids', 'dropped: their image_id is not in "images"'),
    'duplicate_ann_ids': ('annotation ids',
                          'repeat an earlier id; all are kept for training, but COCO '
                          'evaluation against this file would merge them: give every '
                          'annotation its own id'),
    'missing_images': ('image files', 'skipped: not on disk'),
}


@dataclass
class ValidationReport:
    """Counts of what loading an annotation file found and did.

    Attributes:
        ann_file: the annotation file the counts are about.
        images: image records kept.
        annotations: annotation records in the file.
        nonfinite_boxes: boxes with a NaN or infinite coordinate; dropped.
        degenerate_boxes: boxes dropped because width or height <= 0, or lying wholly
            outside the image (those are not also counted as clipped).
        clipped_boxes: boxes reaching outside their image, clipped to it.
        unknown_category_anns: annotations whose category id is not in ``categories``;
            dropped.
        unknown_image_anns: annotations whose image id is not in ``images``; dropped.
        unselected_class_anns: annotations of file categories that the config's
            ``classes`` leave out; dropped (this is how a class subset is trained).
        duplicate_ann_ids: annotation records repeating an earlier id; all are kept.
        images_without_anns: images with no annotation record at all.
        missing_images: images listed in the file but absent on disk; skipped (only for
            datasets that skip them, e.g. Objects365).
        filtered_images: images dropped by ``filter_cfg`` (training only).
        examples: ``{count name: [first MAX_NAMED entries]}`` for the named kinds.
        max_clip_px: the largest distance a clipped box reached past the border.
    """

    ann_file: str = ''
    images: int = 0
    annotations: int = 0
    nonfinite_boxes: int = 0
    degenerate_boxes: int = 0
    clipped_boxes: int = 0
    unknown_category_anns: int = 0
    unknown_image_anns: int = 0
    unselected_class_anns: int = 0
    duplicate_ann_ids: int = 0
    images_without_anns: int = 0
    missing_images: int = 0
    filtered_images: int = 0
    examples: dict = field(default_factory=dict, compare=False, repr=False)
    max_clip_px: float = field(default=0.0, compare=False, repr=False)

    def note(self, kind: str, entry: object) -> None:
        """Count one entry of ``kind`` and remember it if it is among the first few."""
        setattr(self, kind, getattr(self, kind) + 1)
        named = self.examples.setdefault(kind, [])
        if len(named) < MAX_NAMED:
            named.append(entry)

    def summary(self) -> str:
        """One line: ``<ann_file>: images=.. annotations=.. ...``."""
        counts = ' '.join(f'{f.name}={getattr(self, f.name)}' for f in fields(self)
                          if f.name not in ('ann_file', 'examples', 'max_clip_px'))
        return f'{self.ann_file}: {counts}'

    def details(self) -> list[str]:
        """One line per named kind that occurred: its count, first entries and the repair."""
        lines = []
        for kind, (what, done) in _NAMED_KINDS.items():
            count = getattr(self, kind)
            if count:
                named = ', '.join(str(e) for e in self.examples.get(kind, []))
                more = f' and {count - MAX_NAMED} more' if count > MAX_NAMED else ''
                lines.append(f'  {kind}={count}: {what} {named}{more} {done}')
        return lines

    @property
    def suspicious(self) -> bool:
        """Whether anything points at a broken file (worth a warning, not an info line)."""
        return bool(self.nonfinite_boxes or self.degenerate_boxes or self.unknown_category_anns
                    or self.unknown_image_anns or self.duplicate_ann_ids or self.missing_images
                    or self.max_clip_px > CLIP_TOLERANCE_PX)


def log_report(report: ValidationReport, dataset_name: str) -> None:
    """Log the report through the current mmengine logger: one line, plus the named entries."""
    level = logging.WARNING if report.suspicious else logging.INFO
    print_log('\n'.join([f'{dataset_name} annotation check: {report.summary()}']
                        + report.details()),
              logger=MMLogger.get_current_instance(), level=level)


def _listing(names: Sequence[str]) -> str:
    shown = list(names[:_MAX_LISTED])
    more = f' ... and {len(names) - _MAX_LISTED} more' if len(names) > _MAX_LISTED else ''
    return f'{shown}{more}'


# ----------------------------------------------------------------- the file as a whole
def read_annotation_json(ann_file: str, backend_args: dict | None = None) -> dict:
    """Parse a COCO-format json; errors name the file (and line / column for bad JSON)."""
    if not ann_file or not fileio.exists(ann_file, backend_args=backend_args):
        raise FileNotFoundError(f'annotation file {ann_file!r} not found; check ann_file and '
                                f'data_root in the dataset config.')
    with fileio.get_local_path(ann_file, backend_args=backend_args) as path:
        with open(path, encoding='utf-8-sig') as f:  # a byte-order mark is harmless
            try:
                raw = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f'{ann_file} is not valid JSON: {err.msg} at line '
                                 f'{err.lineno}, column {err.colno}.') from None
            except UnicodeDecodeError as err:
                raise ValueError(f'{ann_file} is not UTF-8 text (byte {err.start}); is it '
                                 f'a COCO json?') from None
    if not isinstance(raw, dict):
        raise ValueError(f'{ann_file} holds a JSON {type(raw).__name__}; a COCO annotation '
                         f'file is an object with "images", "annotations" and "categories".')
    return raw


def check_top_level(raw: dict, ann_file: str, need_annotations: bool) -> None:
    """The three COCO lists exist and are lists; ``images`` and ``categories`` are not empty.

    Without ``need_annotations`` (test mode) a file without ``annotations`` is accepted as
    a list of unlabelled images, like COCO's ``image_info_test-dev2017.json``.
    """
    keys = ('images', 'annotations', 'categories') if need_annotations else (
        'images', 'categories')
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ValueError(f'{ann_file} has no {" / ".join(repr(k) for k in missing)} key '
                         f'(its keys: {sorted(raw)}); a COCO annotation file needs "images", '
                         f'"annotations" and "categories" lists'
                         + ('' if 'annotations' not in missing else
                            ' (a file of unlabelled images is read in test_mode=True only)')
                         + '.')
    for key in ('images', 'annotations', 'categories'):
        if key in raw and not isinstance(raw[key], list):
            raise ValueError(f'{ann_file}: "{key}" is a JSON {type(raw[key]).__name__}, '
                             f'not a list.')
    if not raw['images']:
        raise ValueError(f'{ann_file} has no images: its "images" list is empty. Point '
                         f'ann_file at the annotation file of your split.')
    if not raw['categories']:
        raise ValueError(f'{ann_file} has no categories: its "categories" list is empty; '
                         f'add one {{"id": ..., "name": ...}} record per class.')


def _require(record: object, keys: Sequence[str], kind: str, index: int,
             ann_file: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f'{ann_file}: {kind} record #{index} is a JSON '
                         f'{type(record).__name__}, not an object.')
    missing = [k for k in keys if k not in record]
    if missing:
        name = f'id {record["id"]}' if 'id' in record else f'#{index} (no "id")'
        raise ValueError(f'{ann_file}: {kind} {name} has no {missing} field; every {kind} '
                         f'record needs {list(keys)}.')


def unique_images(images: list, ann_file: str) -> dict[int, dict]:
    """``{image id: record}``; a repeated image id raises, since COCO evaluation merges
    records of one id (their boxes would be scored against each other's)."""
    unique: dict[int, dict] = {}
    first_position: dict[int, int] = {}
    repeated: dict[int, list[int]] = {}
    for index, img in enumerate(images):
        _require(img, ('id',), 'image', index, ann_file)
        img_id = img['id']
        if img_id in unique:
            repeated.setdefault(img_id, [first_position[img_id]]).append(index)
            continue
        unique[img_id], first_position[img_id] = img, index
    if repeated:
        shown = '; '.join(
            f'id {i} at positions {pos} (file names '
            f'{", ".join(repr(images[p].get("file_name")) for p in pos)})'
            for i, pos in list(repeated.items())[:MAX_NAMED])
        raise ValueError(f'{ann_file} repeats image ids ({len(repeated)} of them): {shown}. '
                         f'Image ids must be unique (COCO evaluation merges records of the '
                         f'same id): give every image its own id and point its annotations '
                         f'at it.')
    return unique


def check_categories(categories: list, ann_file: str) -> None:
    """Every category has an ``id`` and a ``name``, and no id repeats."""
    seen: dict[int, str] = {}
    for index, cat in enumerate(categories):
        _require(cat, ('id', 'name'), 'category', index, ann_file)
        if cat['id'] in seen:
            raise ValueError(f'{ann_file} has two categories with id {cat["id"]} '
                             f'({seen[cat["id"]]!r} and {cat["name"]!r}); category ids must '
                             f'be unique.')
        seen[cat['id']] = cat['name']


def image_size(img: dict, ann_file: str) -> tuple[int, int]:
    """``(width, height)`` of an image record; both must be positive numbers."""
    width, height = img.get('width'), img.get('height')
    if not all(_is_number(v) and v > 0 for v in (width, height)):
        raise ValueError(f'image id {img["id"]} in {ann_file} needs positive "width" and '
                         f'"height" (pixels); got {width!r}, {height!r}.')
    return int(width), int(height)


# ------------------------------------------------------------------------ classes
def match_classes(classes: Sequence[str], categories: Sequence[dict],
                  ann_file: str) -> dict[int, int]:
    """Map the file's category ids to label indices by class NAME.

    Args:
        classes: the config's class names; label ``i`` is ``classes[i]``.
        categories: the file's ``categories`` records (``id`` and ``name``).
        ann_file: named in error messages.

    Returns:
        ``{category_id: label}`` for every config class, in label order.

    Raises:
        ValueError: if a config class is not among the file's categories (a class
            trained on nothing), or names repeat in the config or the file.
    """
    repeated = [n for n, c in Counter(classes).items() if c > 1]
    if repeated:
        raise ValueError(f'metainfo classes repeat {repeated}; each class may appear once.')
    name_to_id: dict[str, int] = {}
    for cat in categories:
        if cat['name'] in name_to_id:
            raise ValueError(f'{ann_file} has two categories named {cat["name"]!r} '
                             f'(ids {name_to_id[cat["name"]]} and {cat["id"]}); '
                             f'merge them in the file so names identify classes.')
        name_to_id[cat['name']] = cat['id']
    missing = [c for c in classes if c not in name_to_id]
    if missing:
        hints = {c: difflib.get_close_matches(c, list(name_to_id), n=1) for c in missing}
        hint = ', '.join(f'{c!r} -> {h[0]!r}' for c, h in hints.items() if h)
        raise ValueError(
            f'config classes not in {ann_file}: {_listing(missing)}; '
            f"the file's categories are: {_listing(list(name_to_id))}; "
            f'fix metainfo=dict(classes=...)'
            + (f' (close names: {hint})' if hint else '') + '.')
    return {name_to_id[c]: label for label, c in enumerate(classes)}


# -------------------------------------------------------------------------- boxes
def repeated_ids(ids: Iterable) -> list:
    """Each id that repeats an earlier one, once per repetition: ``[1, 1, 1, 2] -> [1, 1]``."""
    seen: set = set()
    repeats = []
    for i in ids:
        if i in seen:
            repeats.append(i)
        seen.add(i)
    return repeats


def count_duplicates(ids: Iterable[int]) -> int:
    """Number of ids that repeat an earlier one: ``[1, 1, 1, 2] -> 2``."""
    return len(repeated_ids(ids))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def clip_box(ann: dict, width: int, height: int, report: ValidationReport,
             ann_file: str) -> list[float] | None:
    """COCO ``bbox`` [x, y, w, h] -> [x1, y1, x2, y2] in pixels, clipped to the image.

    Returns None (and counts it, naming the annotation id) for a box with a NaN or infinite
    coordinate, or with width or height <= 0 before or after clipping. A box that is not
    four numbers is a broken file and raises.
    """
    bbox = ann.get('bbox')
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise ValueError(f'annotation id {ann.get("id")} in {ann_file} has bbox {bbox!r}; '
                         f'COCO boxes are [x, y, width, height] in pixels.')
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        report.note('nonfinite_boxes', ann.get('id'))
        return None
    if w <= 0 or h <= 0:
        report.note('degenerate_boxes', ann.get('id'))
        return None
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:  # entirely outside the image: nothing left to clip to
        report.note('degenerate_boxes', ann.get('id'))
        return None
    if (x1, y1, x2, y2) != (x, y, x + w, y + h):
        report.note('clipped_boxes', ann.get('id'))
        report.max_clip_px = max(report.max_clip_px, x1 - x, y1 - y, x + w - x2, y + h - y2)
    return [x1, y1, x2, y2]


def missing_files_message(missing: Sequence[str], ann_file: str) -> str:
    """"N images listed in <ann_file> are missing: [first few] ..." with what to check."""
    shown = list(missing[:_MAX_LISTED_FILES])
    more = f' and {len(missing) - len(shown)} more' if len(missing) > len(shown) else ''
    return (f'{len(missing)} image(s) listed in {ann_file} are missing: {shown}{more}. '
            f'Check data_root and data_prefix=dict(img=...) in the dataset config.')
