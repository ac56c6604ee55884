"""Objects365 v1 and v2: COCO-format boxes over 365 classes, distributed in patches."""
from __future__ import annotations

from codetr.registry import DATASETS

from .class_names import OBJECTS365_NUM_CLASSES
from .coco import CocoDataset


@DATASETS.register_module()
class Objects365V1Dataset(CocoDataset):
    """Objects365 v1 boxes; ``file_name`` is a bare name under ``data_prefix['img']``.

    Class names are read from the annotation file's ``categories`` in id order when the
    dataset loads (``METAINFO['classes']`` is empty at class level; the published file has
    365). Images listed in the json but absent on disk are skipped and counted in the
    validation summary (``missing_images``): users often download only some patches. If
    none of the images exists the dataset raises, since that is a wrong ``data_root``.
    """

    METAINFO: dict = dict(classes=(), palette=())
    EXPECTED_NUM_CLASSES = OBJECTS365_NUM_CLASSES
    SKIP_MISSING_IMAGES = True


@DATASETS.register_module()
class Objects365V2Dataset(Objects365V1Dataset):
    """Objects365 v2 boxes; ``file_name`` looks like ``images/v1/patch0/x.jpg``.

    The image is looked up as its last two path components (``patch0/x.jpg``) under
    ``data_prefix['img']`` (e.g. ``train/``), the layout the patch archives unpack to.
    Otherwise as :class:`Objects365V1Dataset`.
    """

    def image_file(self, img: dict) -> str:
        return '/'.join(img['file_name'].split('/')[-2:])
