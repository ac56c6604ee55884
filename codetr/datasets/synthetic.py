"""A deterministic synthetic detection and instance-segmentation dataset of coloured
shapes, in COCO format (boxes and polygon masks).

Small enough to train on a CPU in minutes, yet with what makes detection hard: objects
from ~8 px to half the image, occlusion, and textured backgrounds. The same seed gives
byte-identical images and json.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

SYNTHETIC_CLASSES: tuple[str, ...] = (
    'circle', 'square', 'triangle', 'star', 'cross', 'ring', 'hexagon', 'ellipse')
MIN_OBJECT_SIZE = 8  # pixels, the side of the smallest shape's bounding square
MAX_OBJECTS = 8
MAX_HIDDEN_FRACTION = 0.7  # objects hidden more than this by later shapes are not annotated
PLAIN_BACKGROUND = (0, 0, 0)  # shape colours stay above 40 per channel, so never equal it
# cv2.circle paints the pixel centres within r: the outline passes just outside them (a
# margin chosen on 300 random shapes: rasterised outline vs painted pixels, mean IoU 0.99).
CIRCLE_MARGIN = 0.1
MAX_MITRE = 1.5  # longest corner offset of a grown polygon, in units of the edge offset


def _polygon(center: tuple[float, float], radii: list[float], angle: float) -> np.ndarray:
    """Points at equal angular steps with the given radii, rotated by ``angle`` (rad)."""
    steps = np.arange(len(radii)) * 2 * math.pi / len(radii) + angle
    pts = np.stack([center[0] + np.asarray(radii) * np.cos(steps),
                    center[1] + np.asarray(radii) * np.sin(steps)], axis=1)
    return np.round(pts).astype(np.int32)


def _cross_points(center: tuple[float, float], r: float, angle: float) -> np.ndarray:
    """12 corners of a plus sign with arms one third of its width, rotated by ``angle``."""
    a = r / 3
    xy = np.array([(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r),
                   (-a, a), (-r, a), (-r, -a), (-a, -a)])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.round(xy @ rot.T + center).astype(np.int32)


def shape_mask(name: str, height: int, width: int, center: tuple[float, float],
               radius: float, angle: float, aspect: float) -> np.ndarray:
    """(H, W) bool mask of one filled shape of half-size ``radius`` px at ``center`` (x, y).

    ``angle`` (rad) rotates polygons and ellipses; ``aspect`` in (0, 1] is the ellipse's
    minor / major axis ratio.
    """
    mask = np.zeros((height, width), np.uint8)
    c = (int(round(center[0])), int(round(center[1])))
    r = max(int(round(radius)), 2)
    if name in ('circle', 'ring'):
        cv2.circle(mask, c, r, 1, -1)
        if name == 'ring':  # the hole leaves a band at least 2 px wide
            cv2.circle(mask, c, min(int(r * 0.55), r - 2), 0, -1)
    elif name == 'ellipse':
        axes = (r, max(int(round(r * aspect)), 2))
        cv2.ellipse(mask, c, axes, math.degrees(angle), 0, 360, 1, -1)
    elif name == 'cross':
        cv2.fillPoly(mask, [_cross_points(center, radius, angle)], 1)
    else:
        radii = {'square': [radius] * 4, 'triangle': [radius] * 3, 'hexagon': [radius] * 6,
                 'star': [radius, radius * 0.45] * 5}[name]
        cv2.fillPoly(mask, [_polygon(center, radii, angle)], 1)
    return mask.astype(bool)


def _grow(points: np.ndarray, by: float) -> np.ndarray:
    """Offset a simple polygon's edges outward by ``by`` pixels (mitred corners)."""
    keep = np.any(points != np.roll(points, 1, axis=0), axis=1)  # drop repeated vertices
    pts = points[keep] if keep.sum() >= 3 else points
    nxt = np.roll(pts, -1, axis=0)
    orientation = np.sign(np.sum(pts[:, 0] * nxt[:, 1] - nxt[:, 0] * pts[:, 1])) or 1.0
    edges = nxt - pts
    edges = edges / np.maximum(np.linalg.norm(edges, axis=1, keepdims=True), 1e-9)
    normals = orientation * np.stack([edges[:, 1], -edges[:, 0]], axis=1)  # outward
    prev = np.roll(normals, 1, axis=0)
    cos = np.sum(prev * normals, axis=1, keepdims=True)
    miter = np.where(cos > -0.99, (prev + normals) / np.maximum(1 + cos, 1e-2), normals)
    # cap the mitre of sharp tips (a star's) so the outline stays within a pixel of them
    length = np.linalg.norm(miter, axis=1, keepdims=True)
    miter = miter * np.minimum(1.0, MAX_MITRE / np.maximum(length, 1e-9))
    return pts + by * miter


def _ellipse_points(center: tuple[float, float], a: float, b: float, angle: float
                    ) -> np.ndarray:
    """Points on an ellipse of semi-axes ``a, b`` rotated by ``angle`` (rad, as cv2.ellipse
    rotates), close enough that the chords stay within 0.1 px of the curve."""
    num = max(12, math.ceil(math.pi / math.acos(max(1 - 0.1 / max(a, b), -1.0))))
    t = np.arange(num) * 2 * math.pi / num
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([center[0] + x * math.cos(angle) - y * math.sin(angle),
                     center[1] + x * math.sin(angle) + y * math.cos(angle)], axis=1)


def shape_polygon(name: str, center: tuple[float, float], radius: float, angle: float,
                  aspect: float) -> list[float]:
    """The outline of the region :func:`shape_mask` paints, as one flat COCO polygon
    ``[x1, y1, x2, y2, ...]`` in pixel-edge coordinates.

    The drawn geometry (the same rounded vertices, centre and radii) is moved by +0.5 px
    into pixel-edge coordinates. ``cv2.fillPoly`` and ``cv2.ellipse`` paint every pixel
    whose centre lies on or inside their polygon, so those outlines are offset outward by
    half a pixel (between the painted centres and the unpainted ones); ``cv2.circle``
    paints the centres within distance r, so circles get radius ``r + CIRCLE_MARGIN``.
    The ring is one "keyhole" polygon: the outer circle, a zero-width cut, the hole's
    circle backwards; the cut's two edges cancel when rasterised.
    """
    c = (int(round(center[0])) + 0.5, int(round(center[1])) + 0.5)
    r = max(int(round(radius)), 2)
    if name == 'circle':
        pts = _ellipse_points(c, r + CIRCLE_MARGIN, r + CIRCLE_MARGIN, 0.0)
    elif name == 'ellipse':
        b = max(int(round(r * aspect)), 2)
        pts = _ellipse_points(c, r + 0.5, b + 0.5, angle)
    elif name == 'ring':
        hole = min(int(r * 0.55), r - 2) + CIRCLE_MARGIN
        outer = _ellipse_points(c, r + CIRCLE_MARGIN, r + CIRCLE_MARGIN, 0.0)
        inner = _ellipse_points(c, hole, hole, 0.0)
        pts = np.concatenate([outer, outer[:1], inner[:1], inner[::-1]])
    else:
        drawn = (_cross_points(center, radius, angle) if name == 'cross' else
                 _polygon(center, {'square': [radius] * 4, 'triangle': [radius] * 3,
                                   'hexagon': [radius] * 6,
                                   'star': [radius, radius * 0.45] * 5}[name], angle))
        pts = _grow(drawn.astype(np.float64) + 0.5, 0.5)
    return [round(float(v), 2) for v in pts.reshape(-1)]


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR: smooth noise, a linear gradient or stripes, plus fine noise."""
    kind = rng.integers(3)
    if kind == 0:
        coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8)
        img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        theta = rng.uniform(0, math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        proj = xs * math.cos(theta) + ys * math.sin(theta)
        if kind == 1:
            t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
        else:
            t = 0.5 + 0.5 * np.sin(proj * 2 * math.pi / rng.uniform(6, 40))
        c0, c1 = rng.integers(0, 256, (2, 3)).astype(np.float32)
        img = (c0 + t[..., None] * (c1 - c0)).astype(np.uint8)
    grain = rng.integers(-12, 13, img.shape)
    return np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def _random_object(rng: np.random.Generator, height: int, width: int) -> dict:
    """Class, placement and colour of one shape that fits inside the image."""
    max_size = max(MIN_OBJECT_SIZE, min(height, width) // 2)
    size = math.exp(rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(max_size)))
    radius = size / 2
    return dict(label=int(rng.integers(len(SYNTHETIC_CLASSES))),
                center=(rng.uniform(radius + 1, width - radius - 1),
                        rng.uniform(radius + 1, height - radius - 1)),
                radius=radius, angle=rng.uniform(0, 2 * math.pi),
                aspect=rng.uniform(0.35, 0.8),
                color=tuple(int(v) for v in rng.integers(40, 256, 3)))


def render_image(rng: np.random.Generator, height: int, width: int,
                 plain: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Draw 1..8 shapes; later ones cover earlier ones.

    Returns:
        ``(image, objects)``: (H, W, 3) uint8 BGR and one dict per annotated object with
        ``label`` (index into SYNTHETIC_CLASSES), ``bbox`` [x, y, w, h] in pixels (the
        full shape's tight box, pixel edges), ``area`` (the full shape's pixel count) and
        ``segmentation``: the full shape's outline as one COCO polygon
        (:func:`shape_polygon`).
    """
    image = (np.full((height, width, 3), PLAIN_BACKGROUND, np.uint8) if plain
             else textured_background(rng, height, width))
    specs = [_random_object(rng, height, width) for _ in range(rng.integers(1, MAX_OBJECTS + 1))]
    masks = [shape_mask(SYNTHETIC_CLASSES[s['label']], height, width, s['center'],
                        s['radius'], s['angle'], s['aspect']) for s in specs]
    for spec, mask in zip(specs, masks):
        image[mask] = spec['color']
    objects = []
    for i in visible_objects(masks):
        ys, xs = np.nonzero(masks[i])
        x1, y1 = int(xs.min()), int(ys.min())
        spec = specs[i]
        polygon = shape_polygon(SYNTHETIC_CLASSES[spec['label']], spec['center'],
                                spec['radius'], spec['angle'], spec['aspect'])
        objects.append(dict(label=spec['label'], area=int(masks[i].sum()),
                            bbox=[x1, y1, int(xs.max()) + 1 - x1, int(ys.max()) + 1 - y1],
                            segmentation=[polygon]))
    return image, objects


def visible_objects(masks: list[np.ndarray]) -> list[int]:
    """Indices (in drawing order) of the non-empty (H, W) masks that later masks hide by at
    most MAX_HIDDEN_FRACTION of their pixels."""
    if not masks:
        return []
    kept = []
    covered = np.zeros(masks[0].shape, bool)  # union of the shapes drawn later
    for i in range(len(masks) - 1, -1, -1):
        area = int(masks[i].sum())
        hidden = int((masks[i] & covered).sum())
        covered |= masks[i]
        if area > 0 and hidden <= MAX_HIDDEN_FRACTION * area:
            kept.append(i)
    return kept[::-1]


def _write_split(out_dir: Path, split: str, split_index: int, num_images: int, seed: int,
                 min_size: int, max_size: int) -> Path:
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    coco: dict = dict(images=[], annotations=[],
                      categories=[dict(id=i + 1, name=n) for i, n in enumerate(SYNTHETIC_CLASSES)])
    for index in range(num_images):
        # One generator per image: a split's images do not depend on the other split's size.
        rng = np.random.default_rng([seed, split_index, index])
        height, width = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
        image, objects = render_image(rng, height, width)
        file_name = f'{index:06d}.png'
        cv2.imwrite(str(out_dir / split / file_name), image)
        coco['images'].append(dict(id=index + 1, file_name=file_name, width=width,
                                   height=height))
        for obj in objects:
            coco['annotations'].append(dict(
                id=len(coco['annotations']) + 1, image_id=index + 1,
                category_id=obj['label'] + 1, bbox=obj['bbox'], area=obj['area'], iscrowd=0,
                segmentation=obj['segmentation']))
    ann_file = out_dir / 'annotations' / f'instances_{split}.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco))
    return ann_file


def make_synthetic_dataset(out_dir: str | Path, num_train: int, num_val: int, seed: int = 0,
                           min_size: int = 128, max_size: int = 256) -> dict[str, Path]:
    """Write ``out_dir/{train,val}/*.png`` and ``out_dir/annotations/instances_{split}.json``.

    Image sides are drawn uniformly from ``[min_size, max_size]`` pixels. Returns the
    annotation file of each split: ``{'train': Path, 'val': Path}``.
    """
    if not MIN_OBJECT_SIZE * 2 <= min_size <= max_size:
        raise ValueError(f'need {MIN_OBJECT_SIZE * 2} <= min_size <= max_size, got '
                         f'min_size={min_size}, max_size={max_size}')
    out_dir = Path(out_dir)
    return {split: _write_split(out_dir, split, i, n, seed, min_size, max_size)
            for i, (split, n) in enumerate((('train', num_train), ('val', num_val)))}
