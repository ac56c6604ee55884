"""COCO-format detection dataset: the loader every other annotation format builds on."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from mmengine import fileio
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from codetr.registry import DATASETS

from .class_names import COCO_CLASSES, make_palette
from .validation import (
    ValidationReport,
    check_categories,
    check_top_level,
    clip_box,
    image_size,
    log_report,
    match_classes,
    missing_files_message,
    read_annotation_json,
    repeated_ids,
    unique_images,
)

_FILTER_KEYS = {'filter_empty_gt', 'min_size'}


@DATASETS.register_module()
class CocoDataset(BaseDataset):
    """Boxes from a COCO json, one data_info per image.

    Each entry of ``data_list`` (the contract transforms and metrics rely on)::

        dict(img_path=str, img_id=int, height=int, width=int,
             instances=[dict(bbox=[x1, y1, x2, y2],   # float pixels, clipped to the image
                             bbox_label=int,          # index into metainfo['classes']
                             ignore_flag=0 | 1,       # 1 for iscrowd / ignore boxes
                             mask=segmentation)])     # if the file has one: COCO polygons
                                                      # (list) or RLE (dict), original pixels

    Labels follow ``metainfo['classes']`` (the 80 COCO classes by default): category ids of
    the file are matched by NAME, so a file may order or number its categories freely. A
    config class that is not in the file raises (see :func:`match_classes`). What loading
    repaired or dropped is kept in ``self.validation_report`` and logged as one line.

    Args:
        ann_file: COCO json, relative to ``data_root`` unless absolute.
        metainfo: ``dict(classes=(...), palette=[...])``; ``classes`` selects and orders the
            classes to train. A palette of the wrong length is regenerated.
        data_root: root joined to ``ann_file`` and ``data_prefix``.
        data_prefix: ``dict(img='train2017/')``, the image folder.
        filter_cfg: training only: ``dict(filter_empty_gt=True, min_size=32)`` drops images
            without a non-ignored box and images whose shorter side (pixels) < min_size.
        pipeline: transforms applied by ``__getitem__``.
        test_mode: keep every image (no filtering).
        backend_args: mmengine file backend arguments for the json and the images.
        check_files: check at build time that every image exists (one stat per image);
            otherwise a missing image raises when its index is loaded.
        **kwargs: the other :class:`mmengine.dataset.BaseDataset` arguments
            (``indices``, ``serialize_data``, ``lazy_init``, ``max_refetch``).
    """

    METAINFO: dict = dict(classes=COCO_CLASSES, palette=make_palette(len(COCO_CLASSES)))
    # Classes read from the file (in category-id order) when METAINFO leaves them empty;
    # a different count from the published file's is logged as a warning.
    EXPECTED_NUM_CLASSES: int | None = None
    # Datasets distributed in parts (Objects365) skip absent images instead of failing.
    SKIP_MISSING_IMAGES: bool = False

    def __init__(self, ann_file: str = '', metainfo: Mapping | None = None,
                 data_root: str = '', data_prefix: dict | None = None,
                 filter_cfg: dict | None = None, pipeline: Sequence = (),
                 test_mode: bool = False, backend_args: dict | None = None,
                 check_files: bool = False, **kwargs: Any) -> None:
        if filter_cfg is not None and not set(filter_cfg) <= _FILTER_KEYS:
            raise ValueError(f'filter_cfg keys {sorted(set(filter_cfg) - _FILTER_KEYS)} are '
                             f'unknown; use {sorted(_FILTER_KEYS)}.')
        self.backend_args = backend_args
        self.check_files = check_files
        self.validation_report = ValidationReport(ann_file=ann_file)
        self.cat_ids: list[int] = []
        self.cat2label: dict[int, int] = {}
        super().__init__(ann_file=ann_file, metainfo=metainfo, data_root=data_root,
                         data_prefix=dict(img='') if data_prefix is None else data_prefix,
                         filter_cfg=filter_cfg, pipeline=list(pipeline),
                         test_mode=test_mode, **kwargs)

    @classmethod
    def _load_metainfo(cls, metainfo: Mapping | None = None) -> dict:
        info = super()._load_metainfo(metainfo)
        if info.get('classes'):
            info['classes'] = tuple(info['classes'])
            if len(info.get('palette') or ()) != len(info['classes']):
                info['palette'] = make_palette(len(info['classes']))
        return info

    def full_init(self) -> None:
        """Load, validate, filter; then log the validation summary once."""
        if self._fully_initialized:
            return
        super().full_init()
        log_report(self.validation_report, type(self).__name__)

    # ----------------------------------------------------------------- loading
    def load_data_list(self) -> list[dict]:
        """Parse the json into data_infos, checking it on the way (see the class doc)."""
        report = ValidationReport(ann_file=str(self.ann_file))
        raw = self._read_json()
        classes = self._resolve_classes(raw['categories'])
        self.cat2label = match_classes(classes, raw['categories'], str(self.ann_file))
        self.cat_ids = list(self.cat2label)
        images = unique_images(raw['images'], str(self.ann_file))
        report.images = len(images)
        anns = self._group_annotations(raw.get('annotations', []), images, raw['categories'],
                                       report)
        data_list = [self._parse_image(img, anns.get(img_id, []), report)
                     for img_id, img in images.items()]
        data_list = self._drop_missing_images(data_list, report)
        self.validation_report = report
        return data_list

    def _read_json(self) -> dict:
        """The json's dict after the whole-file checks (keys, empty lists, category ids)."""
        ann_file = str(self.ann_file)
        raw = read_annotation_json(ann_file, self.backend_args)
        check_top_level(raw, ann_file, need_annotations=not self.test_mode)
        check_categories(raw['categories'], ann_file)
        if 'annotations' not in raw:
            print_log(f'{ann_file} has no "annotations": its images are read as unlabelled '
                      f'(test mode).', logger='current', level=logging.INFO)
        return raw

    def _resolve_classes(self, categories: list[dict]) -> tuple[str, ...]:
        """The config's classes, or the file's names in category-id order if none are set."""
        classes = self._metainfo.get('classes')
        if classes:
            return tuple(classes)
        classes = tuple(c['name'] for c in sorted(categories, key=lambda c: c['id']))
        self._metainfo.update(classes=classes, palette=make_palette(len(classes)))
        expected = self.EXPECTED_NUM_CLASSES
        if expected is not None and len(classes) != expected:
            print_log(f'{self.ann_file} has {len(classes)} categories; the published '
                      f'{type(self).__name__} file has {expected}.', logger='current',
                      level=logging.WARNING)
        return classes

    def _group_annotations(self, anns: list[dict], images: dict[int, dict],
                           categories: list[dict],
                           report: ValidationReport) -> dict[int, list[dict]]:
        """Annotations of the selected classes per image id; the others are counted."""
        known_cats = {c['id'] for c in categories}
        report.annotations = len(anns)
        for index, ann in enumerate(anns):
            if not isinstance(ann, dict):
                raise ValueError(f'{self.ann_file}: annotation record #{index} is a JSON '
                                 f'{type(ann).__name__}, not an object.')
        for ann_id in repeated_ids(a['id'] for a in anns if 'id' in a):
            report.note('duplicate_ann_ids', ann_id)
        grouped: dict[int, list[dict]] = defaultdict(list)
        annotated: set[int] = set()
        for index, ann in enumerate(anns):
            name = ann.get('id', f'#{index}')
            if ann.get('image_id') not in images:
                report.note('unknown_image_anns', f'{name} (image_id {ann.get("image_id")!r})')
                continue
            annotated.add(ann['image_id'])
            if ann.get('category_id') not in known_cats:
                report.note('unknown_category_anns',
                            f'{name} (category_id {ann.get("category_id")!r})')
            elif ann['category_id'] not in self.cat2label:
                report.unselected_class_anns += 1
            else:
                grouped[ann['image_id']].append(ann)
        report.images_without_anns = len(images) - len(annotated)
        return grouped

    def _parse_image(self, img: dict, anns: list[dict], report: ValidationReport) -> dict:
        """One data_info (see the class doc) from an image record and its annotations."""
        width, height = image_size(img, str(self.ann_file))
        instances = []
        for ann in anns:
            bbox = clip_box(ann, width, height, report, str(self.ann_file))
            if bbox is None:
                continue
            ignore = bool(ann.get('iscrowd', 0)) or bool(ann.get('ignore', False))
            instance = dict(bbox=bbox, bbox_label=self.cat2label[ann['category_id']],
                            ignore_flag=int(ignore))
            if ann.get('segmentation'):  # polygons or RLE, read by LoadAnnotations(with_mask)
                instance['mask'] = ann['segmentation']
            instances.append(instance)
        return dict(img_path=fileio.join_path(self.data_prefix['img'], self.image_file(img)),
                    img_id=img['id'], height=height, width=width,
                    instances=instances, **self.extra_image_fields(img))

    def image_file(self, img: dict) -> str:
        """Path of an image under ``data_prefix['img']``: COCO's ``file_name``."""
        if not isinstance(img.get('file_name'), str):
            raise ValueError(f'image id {img["id"]} in {self.ann_file} has no "file_name" '
                             f'(got {img.get("file_name")!r}); COCO images are located by it.')
        return img['file_name']

    def extra_image_fields(self, img: dict) -> dict:
        """Fields a subclass adds to each data_info (LVIS: its evaluation ids)."""
        return {}

    def _drop_missing_images(self, data_list: list[dict],
                             report: ValidationReport) -> list[dict]:
        if not (self.check_files or self.SKIP_MISSING_IMAGES):
            return data_list
        present = [fileio.exists(d['img_path'], backend_args=self.backend_args)
                   for d in data_list]
        missing = [d['img_path'] for d, ok in zip(data_list, present) if not ok]
        # Skipping everything would leave an empty dataset: surely a wrong data_root.
        if missing and (not self.SKIP_MISSING_IMAGES or len(missing) == len(data_list)):
            raise FileNotFoundError(missing_files_message(missing, str(self.ann_file)))
        for path in missing:
            report.note('missing_images', path)
        return [d for d, ok in zip(data_list, present) if ok]

    # --------------------------------------------------------------- filtering
    def filter_data(self) -> list[dict]:
        """Apply ``filter_cfg`` when training; counts go to ``validation_report``."""
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        filter_empty = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        kept = [d for d in self.data_list
                if min(d['width'], d['height']) >= min_size
                and not (filter_empty and all(i['ignore_flag'] for i in d['instances']))]
        self.validation_report.filtered_images = len(self.data_list) - len(kept)
        if self.data_list and not kept:
            raise ValueError(
                f'filter_cfg={self.filter_cfg} removed all {len(self.data_list)} images of '
                f'{self.ann_file} ({self.validation_report.images_without_anns} have no '
                f'annotation at all); check that the file has boxes of the configured '
                f'classes, or relax filter_cfg.')
        return kept

    # ------------------------------------------------------------------ access
    def get_cat_ids(self, idx: int) -> list[int]:
        """Labels (indices into ``classes``) of the boxes of image ``idx``."""
        return [inst['bbox_label'] for inst in self.get_data_info(idx)['instances']]

    def prepare_data(self, idx: int) -> Any:
        """Run the pipeline on image ``idx``; a missing image raises, naming it and idx."""
        data_info = self.get_data_info(idx)
        checked = self.check_files or self.SKIP_MISSING_IMAGES
        if not checked and not fileio.exists(data_info['img_path'],
                                             backend_args=self.backend_args):
            raise FileNotFoundError(
                f'image {data_info["img_path"]!r} (dataset index {idx}, image id '
                f'{data_info["img_id"]}) not found; check data_root and data_prefix, or set '
                f'check_files=True to list every missing image when the dataset is built.')
        return self.pipeline(data_info)
