"""A folder of images as an unlabelled COCO json (inference, pseudo-labelling).

Image sizes come from the file headers (PIL opens lazily and reads no pixels), turned by the
EXIF orientation the way OpenCV, and so ``LoadImageFromFile``, turns the decoded image.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 degrees: width and height swap


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as it will be loaded, from its header only.

    Raises ``ValueError`` naming the file when it is not a readable image.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f'{path} cannot be read as an image: {err}') from err
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return width, height


def list_images(img_dir: str | Path,
                exclude_extensions: Sequence[str] = ()) -> list[Path]:
    """Image files under ``img_dir`` (recursive), sorted by path."""
    img_dir = Path(img_dir)
    if not img_dir.is_dir():
        raise FileNotFoundError(f'image folder {img_dir} does not exist')
    excluded = {e.lower() if e.startswith('.') else f'.{e.lower()}' for e in exclude_extensions}
    return sorted(p for p in img_dir.rglob('*')
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and p.suffix.lower() not in excluded)


def images_to_coco(img_dir: str | Path, class_names: Sequence[str],
                   exclude_extensions: Sequence[str] = (),
                   paths: Iterator[Path] | None = None) -> dict:
    """An unlabelled COCO dict of the images under ``img_dir``.

    Args:
        img_dir: the image folder; ``file_name`` is each image's path relative to it.
        class_names: the categories, ids 1..C in this order (what the model predicts).
        exclude_extensions: suffixes to skip, e.g. ``('.tif',)``.
        paths: the images to convert (default ``list_images(img_dir, exclude_extensions)``);
            pass a progress-tracked iterable to show progress.

    Returns:
        ``dict(images=[dict(id, file_name, width, height)], annotations=[],
        categories=[dict(id, name)])`` with image ids 1..N in path order.
    """
    if not class_names:
        raise ValueError('the class list is empty; give one class name a line')
    if len(set(class_names)) != len(class_names):
        repeated = sorted({n for n in class_names if list(class_names).count(n) > 1})
        raise ValueError(f'class names {repeated} appear more than once in the class list')
    img_dir = Path(img_dir)
    paths = list_images(img_dir, exclude_extensions) if paths is None else paths
    images = []
    for path in paths:
        width, height = image_size(path)
        images.append(dict(id=len(images) + 1, file_name=path.relative_to(img_dir).as_posix(),
                           width=width, height=height))
    if not images:
        raise ValueError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) under {img_dir}')
    return dict(images=images, annotations=[],
                categories=[dict(id=i + 1, name=n) for i, n in enumerate(class_names)])
