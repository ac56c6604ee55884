"""LVIS v1: COCO-format boxes over 1203 classes, with federated-evaluation fields."""
from __future__ import annotations

from codetr.registry import DATASETS

from .class_names import LVIS_V1_NUM_CLASSES
from .coco import CocoDataset


@DATASETS.register_module()
class LVISV1Dataset(CocoDataset):
    """LVIS v1 boxes (``lvis_v1_train.json`` / ``lvis_v1_val.json``).

    Differences from :class:`CocoDataset`:

    - Class names: ``METAINFO['classes']`` is empty at class level, and the names are read
      from the annotation file's ``categories`` in id order when the dataset loads (1203
      for the published files; another count is logged as a warning). After loading,
      ``dataset.metainfo['classes']`` holds them. ``metainfo=dict(classes=...)`` still
      selects classes by name, as for COCO.
    - Image paths come from ``coco_url``: its last two components
      (``train2017/000000391895.jpg``) under ``data_prefix['img']``, because LVIS v1 draws
      its train and val images from both COCO folders. Keep ``data_prefix=dict(img='')``
      and ``data_root`` at the folder holding ``train2017/`` and ``val2017/``.
    - Each data_info also carries the image's ``not_exhaustive_category_ids`` and
      ``neg_category_ids`` (file category ids, not labels) for LVIS evaluation.
    """

    METAINFO: dict = dict(classes=(), palette=())
    EXPECTED_NUM_CLASSES = LVIS_V1_NUM_CLASSES

    def image_file(self, img: dict) -> str:
        """``http://images.cocodataset.org/train2017/x.jpg`` -> ``train2017/x.jpg``."""
        if 'coco_url' not in img:
            raise ValueError(f'image id {img["id"]} in {self.ann_file} has no "coco_url"; '
                             f'LVIS v1 images are located through it.')
        return '/'.join(img['coco_url'].rstrip('/').split('/')[-2:])

    def extra_image_fields(self, img: dict) -> dict:
        return dict(not_exhaustive_category_ids=list(img.get('not_exhaustive_category_ids', [])),
                    neg_category_ids=list(img.get('neg_category_ids', [])))
