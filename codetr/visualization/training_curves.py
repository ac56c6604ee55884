"""Training curves of Co-DETR runs from mmengine's ``vis_data/scalars.json`` logs.

A log holds one JSON object per line: training lines carry ``epoch``, ``iter`` (global,
1-based), ``lr`` and the loss terms; validation lines carry the metrics (``coco/bbox_mAP``)
with ``step`` = epoch. Co-DETR's loss keys name their branch (docs/design_notes.md):

- one-to-one: ``loss_*`` and ``d{i}.loss_*`` (decoder), ``enc_loss_*`` (encoder proposals),
  ``dn_loss_*`` / ``d{i}.dn_loss_*`` (denoising queries);
- aux head ``NAME``: ``NAME.loss_*``;
- that head's positive queries: ``NAME.pos.loss_*`` and ``NAME.pos.d{i}.loss_*``.

:func:`plot_branches` draws the learning rate, the total loss, one panel per branch and
the validation AP, for one run or several on the same axes (the legend names the runs).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

Series = dict[str, list[tuple[int, float]]]
# Keys of a log line that index it rather than measure something.
INDEX_KEYS = ('epoch', 'iter', 'step')
AP_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_AP', 'bbox_AP50')


def load_log(path: str | Path) -> Series:
    """``{key: [(x, value), ...]}`` with x = global iteration (training) or epoch (val)."""
    series: Series = defaultdict(list)
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{line_no} is not a JSON line: {err}') from err
            x = record.get('iter', record.get('step'))
            for key, value in record.items():
                if key not in INDEX_KEYS and isinstance(value, (int, float)):
                    series[key].append((x, float(value)))
    return dict(series)


def _is_layer(part: str) -> bool:
    return part[:1] == 'd' and part[1:].isdigit()


def branch_of(key: str) -> str | None:
    """The branch a logged loss belongs to: ``'total'`` (``loss``), ``'one-to-one'``,
    ``'<name> head'`` (aux head losses) or ``'<name> queries'`` (its positive queries);
    None for anything that is not a loss (``lr``, ``grad_norm``, metrics)."""
    if key == 'loss':
        return 'total'
    if 'loss' not in key or '/' in key:
        return None
    parts = key.split('.')
    if len(parts) == 1 or _is_layer(parts[0]):
        return 'one-to-one'
    return f'{parts[0]} queries' if parts[1] == 'pos' else f'{parts[0]} head'


def term_of(key: str) -> str:
    """The curve a loss key adds to within its branch: ``'decoder'``, ``'encoder'`` or
    ``'denoising'`` for the one-to-one branch; the loss name (``loss_cls``) otherwise,
    summed over decoder layers for positive queries."""
    parts = key.split('.')
    if branch_of(key) == 'one-to-one':
        name = parts[-1]
        return ('encoder' if name.startswith('enc_') else
                'denoising' if name.startswith('dn_') else 'decoder')
    return parts[-1]


def branch_series(series: Mapping[str, list[tuple[int, float]]]) -> dict[str, Series]:
    """``{branch: {term: [(iteration, summed value), ...]}}`` for every loss branch, plus
    ``'learning rate'`` (``lr``, else ``base_lr``) and ``'validation'`` (AP keys)."""
    sums: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for key, points in series.items():
        branch = branch_of(key)
        if branch is None:
            continue
        term = 'loss' if branch == 'total' else term_of(key)
        for x, value in points:
            sums[branch][term][x] = sums[branch][term].get(x, 0.0) + value
    out: dict[str, Series] = {}
    lr_key = 'lr' if 'lr' in series else 'base_lr' if 'base_lr' in series else None
    if lr_key:
        out['learning rate'] = {lr_key: list(series[lr_key])}
    for branch in sorted(sums, key=_branch_order):
        out[branch] = {term: sorted(points.items()) for term, points in sums[branch].items()}
    ap = {key: list(points) for key, points in series.items()
          if '/' in key and key.split('/', 1)[1] in AP_KEYS}
    if ap:
        out['validation'] = ap
    return out


def _branch_order(branch: str) -> tuple[int, str]:
    """total, one-to-one, then each aux head followed by its positive queries."""
    if branch in ('total', 'one-to-one'):
        return (0 if branch == 'total' else 1, '')
    name, kind = branch.rsplit(' ', 1)
    return (2, f'{name} {0 if kind == "head" else 1}')


def run_names(paths: Sequence[str | Path]) -> list[str]:
    """Legend names: the work dir of ``<work_dir>/<timestamp>/vis_data/scalars.json`` (with
    its timestamp when two runs share it), else the file's stem with its folder."""
    def parts(path: Path) -> tuple[str, str]:
        if path.parent.name == 'vis_data' and len(path.parents) >= 3:
            return path.parents[2].name, f'{path.parents[2].name}/{path.parents[1].name}'
        return f'{path.parent.name}/{path.stem}', str(path)
    pairs = [parts(Path(p)) for p in paths]
    short = [s for s, _ in pairs]
    return [s if short.count(s) == 1 else long for s, long in pairs]


def plot_branches(paths: Sequence[str | Path], out: str | Path,
                  names: Sequence[str] | None = None, columns: int = 3) -> dict[str, list[str]]:
    """Plot each run's learning rate, total loss, per-branch losses and validation AP.

    Args:
        paths: ``scalars.json`` logs; two or more are compared on the same axes.
        out: image file to write (PNG by its suffix).
        names: legend name of each run; by default :func:`run_names`.
        columns: panels per row.

    Returns:
        ``{panel title: [legend labels]}``, what was drawn: a label is the curve's term
        (``decoder``, ``loss_cls``) for one run, ``'<run>: <term>'`` for several.
    """
    names = list(names) if names is not None else run_names(paths)
    if len(names) != len(paths):
        raise ValueError(f'{len(paths)} logs but {len(names)} names: give one name per log.')
    runs = {name: branch_series(load_log(path)) for name, path in zip(names, paths)}
    panels = list(dict.fromkeys(p for run in runs.values() for p in run))
    if not panels:
        raise ValueError(f'{", ".join(map(str, paths))}: no lr, loss or AP values to plot.')
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(5 * min(columns, len(panels)), 3.6 * rows))
    drawn: dict[str, list[str]] = {}
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, min(columns, len(panels)), i + 1)
        for run_index, (run, branches) in enumerate(runs.items()):
            style = ('-', '--', ':', '-.')[run_index % 4]
            for j, (term, points) in enumerate(branches.get(panel, {}).items()):
                xs, ys = zip(*points)
                label = term if len(runs) == 1 else f'{run}: {term}'
                ax.plot(xs, ys, style, color=f'C{j}', label=label,
                        marker='o' if panel == 'validation' else None)
                drawn.setdefault(panel, []).append(label)
        ax.set_title(panel)
        ax.set_xlabel('epoch' if panel == 'validation' else 'iteration')
        ax.legend(fontsize='x-small')
    fig.tight_layout()
    fig.savefig(out)
    return drawn
