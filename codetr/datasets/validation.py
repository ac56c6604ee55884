"""Checks run while a detection dataset loads its annotation file.

Problems that would silently corrupt training (config class names that are not in the
file, a missing image with ``check_files=True``, a malformed box) raise with a message that
says what to fix. Problems that are common in real annotation files and have one sensible
repair (boxes past the image border, zero-size boxes, dangling category ids) are repaired
or dropped and counted in a :class:`ValidationReport`, which is logged as one line.
"""
from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

from mmengine.logging import MMLogger, print_log

# How many names / paths an error message spells out before it summarises the rest.
_MAX_LISTED = 100
_MAX_LISTED_FILES = 5


@dataclass
class ValidationReport:
    """Counts of what loading an annotation file found and did.

    Attributes:
        ann_file: the annotation file the counts are about.
        images: image records kept (each image id once).
        annotations: annotation records in the file.
        degenerate_boxes: boxes dropped because width or height <= 0, or lying wholly
            outside the image (those are not also counted as clipped).
        clipped_boxes: boxes reaching outside their image, clipped to it.
        unknown_category_anns: annotations whose category id is not in ``categories``;
            dropped.
        unknown_image_anns: annotations whose image id is not in ``images``; dropped.
        unselected_class_anns: annotations of file categories that the config's
            ``classes`` leave out; dropped (this is how a class subset is trained).
        duplicate_image_ids: image records repeating an earlier id; the first is kept.
        duplicate_ann_ids: annotation records repeating an earlier id; all are kept.
        images_without_anns: images with no annotation record at all.
        missing_images: images listed in the file but absent on disk; skipped (only for
            datasets that skip them, e.g. Objects365).
        filtered_images: images dropped by ``filter_cfg`` (training only).
    """

    ann_file: str = ''
    images: int = 0
    annotations: int = 0
    degenerate_boxes: int = 0
    clipped_boxes: int = 0
    unknown_category_anns: int = 0
    unknown_image_anns: int = 0
    unselected_class_anns: int = 0
    duplicate_image_ids: int = 0
    duplicate_ann_ids: int = 0
    images_without_anns: int = 0
    missing_images: int = 0
    filtered_images: int = 0

    def summary(self) -> str:
        """One line: ``<ann_file>: images=.. annotations=.. ...``."""
        counts = ' '.join(f'{f.name}={getattr(self, f.name)}'
                          for f in fields(self) if f.name != 'ann_file')
        return f'{self.ann_file}: {counts}'


def log_report(report: ValidationReport, dataset_name: str) -> None:
    """Log the report as one line through the current mmengine logger."""
    # Counts that point at a broken file are worth a warning; the rest is routine.
    suspicious = (report.unknown_category_anns or report.unknown_image_anns
                  or report.duplicate_image_ids or report.duplicate_ann_ids
                  or report.missing_images)
    level = logging.WARNING if suspicious else logging.INFO
    print_log(f'{dataset_name} annotation check: {report.summary()}',
              logger=MMLogger.get_current_instance(), level=level)


def _listing(names: Sequence[str]) -> str:
    shown = list(names[:_MAX_LISTED])
    more = f' ... and {len(names) - _MAX_LISTED} more' if len(names) > _MAX_LISTED else ''
    return f'{shown}{more}'


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


def count_duplicates(ids: Iterable[int]) -> int:
    """Number of ids that repeat an earlier one: ``[1, 1, 1, 2] -> 2``."""
    seen: set[int] = set()
    dup = 0
    for i in ids:
        if i in seen:
            dup += 1
        seen.add(i)
    return dup


def clip_box(ann: dict, width: int, height: int, report: ValidationReport,
             ann_file: str) -> list[float] | None:
    """COCO ``bbox`` [x, y, w, h] -> [x1, y1, x2, y2] in pixels, clipped to the image.

    Returns None (and counts it) for a box with width or height <= 0, before or after
    clipping. A box that is not four numbers is a broken file and raises.
    """
    bbox = ann.get('bbox')
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) for v in bbox)):
        raise ValueError(f'annotation id {ann.get("id")} in {ann_file} has bbox {bbox!r}; '
                         f'COCO boxes are [x, y, width, height] in pixels.')
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        report.degenerate_boxes += 1
        return None
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:  # entirely outside the image: nothing left to clip to
        report.degenerate_boxes += 1
        return None
    if (x1, y1, x2, y2) != (x, y, x + w, y + h):
        report.clipped_boxes += 1
    return [x1, y1, x2, y2]


def missing_files_message(missing: Sequence[str], ann_file: str) -> str:
    """"N images listed in <ann_file> are missing: [first few] ..." with what to check."""
    shown = list(missing[:_MAX_LISTED_FILES])
    more = f' and {len(missing) - len(shown)} more' if len(missing) > len(shown) else ''
    return (f'{len(missing)} image(s) listed in {ann_file} are missing: {shown}{more}. '
            f'Check data_root and data_prefix=dict(img=...) in the dataset config.')
