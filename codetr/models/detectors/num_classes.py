"""One class count for every head of a detector.

``CoDETR(num_classes=N)`` gives ``N`` to every head config that does not set its own: the
query head and each aux head, including class counts nested inside a head's config (the
RoI box head of ``CoRPNRoIHead``). A head's own value that differs is an error naming both
heads and both values, since heads that predict different class sets cannot share labels.
Without ``model.num_classes`` the query head's value is the reference.

Which config keys of a head receive the class count:

- ``num_classes`` when the head's ``__init__`` takes it (every dense head, and heads that
  hand it on to their own parts);
- otherwise the dotted paths in the head class's ``num_classes_keys`` attribute
  (``CoRPNRoIHead.num_classes_keys = ('roi.bbox_head.num_classes',)``).

Both kinds, and ``num_classes`` itself, are checked wherever the config sets them. A
class-agnostic head (no such key) is left alone.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping

from codetr.registry import MODELS


def _head_class(cfg: Mapping) -> type:
    return cfg['type'] if isinstance(cfg['type'], type) else MODELS.get(cfg['type'])


def class_count_keys(cfg: Mapping) -> list[str]:
    """Dotted config paths of a head config (with ``type``) that receive the class count."""
    head_cls = _head_class(cfg)
    if 'num_classes' in inspect.signature(head_cls.__init__).parameters:
        return ['num_classes']
    return list(getattr(head_cls, 'num_classes_keys', ()))


def checked_keys(cfg: Mapping) -> list[str]:
    """The keys of :func:`class_count_keys`, then every other class-count key the config
    sets (a head's declared nested keys, or a ``num_classes`` its ``__init__`` hides)."""
    keys = class_count_keys(cfg)
    others = [*getattr(_head_class(cfg), 'num_classes_keys', ()), 'num_classes']
    return keys + [k for k in dict.fromkeys(others) if k not in keys and _get(cfg, k) is not None]


def _get(cfg: Mapping, path: str) -> object:
    node: object = cfg
    for part in path.split('.'):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set(cfg: dict, path: str, value: int) -> None:
    *parents, last = path.split('.')
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def fill_num_classes(num_classes: int | None, query_head: Mapping,
                     aux_heads: Mapping[str, Mapping]) -> tuple[dict, dict, int]:
    """Copies of the head configs with every class count set to one value.

    Args:
        num_classes: ``model.num_classes``, or None to take the query head's.
        query_head: the one-to-one head's config.
        aux_heads: ``{name: config}`` of the aux heads.

    Returns:
        ``(query_head, aux_heads, num_classes)``.

    Raises:
        ValueError: no class count anywhere, or a head's own count that differs from the
            reference, naming both heads (config paths and types) and both values.
    """
    heads = {'model.query_head': copy.deepcopy(dict(query_head))}
    heads.update({f'model.aux_heads.{name}': copy.deepcopy(dict(cfg))
                  for name, cfg in aux_heads.items()})
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'model.num_classes must be a positive integer, got '
                             f'{num_classes!r}.')
        reference = 'model.num_classes'
    else:
        num_classes = _get(heads['model.query_head'], 'num_classes')
        if num_classes is None:
            raise ValueError('set model.num_classes to the number of classes of your dataset '
                             '(every head takes it); the query head has no num_classes '
                             'either.')
        reference = f'model.query_head.num_classes ({query_head["type"]})'
    for prefix, cfg in heads.items():
        for key in checked_keys(cfg):
            value = _get(cfg, key)
            if value is None:
                _set(cfg, key, num_classes)
            elif value != num_classes:
                raise ValueError(
                    f'{prefix}.{key}={value!r} ({cfg["type"]}) differs from {reference}='
                    f'{num_classes}: every head must predict the same classes. Set '
                    f'model.num_classes once and remove the heads\' own num_classes (or give '
                    f'them the same number).')
    query_head = heads.pop('model.query_head')
    aux = {name: heads[f'model.aux_heads.{name}'] for name in aux_heads}
    return query_head, aux, num_classes
