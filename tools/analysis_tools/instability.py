"""Instability of the one-to-one (Hungarian) matching between consecutive checkpoints of a
run: how often each ground-truth box's matched query changes, per decoder layer (DN-DETR's
IS, Co-DETR Fig. 5).

Examples::

    python tools/analysis_tools/instability.py work_dirs/run --out-dir work_dirs/instability
    python tools/analysis_tools/instability.py epoch_1.pth epoch_2.pth epoch_3.pth \\
        --config CONFIG --out-dir work_dirs/instability --split train --max-images 500

A work dir contributes its ``epoch_*.pth`` files. Checkpoints are ordered by epoch
(``meta['epoch']``, else the ``epoch_N`` in the name). The config comes from ``--config``,
else from the first checkpoint's ``meta['cfg']`` (saved by the training runner). Keep the
checkpoints of every epoch (``default_hooks.checkpoint.max_keep_ckpts``) to measure a run.
Writes ``instability.png`` and ``instability.json``; the measures are defined in
``codetr/analysis/instability.py``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmengine.config import Config, DictAction

from codetr.analysis import instability as ins
from codetr.analysis.model_inputs import (
    build_model,
    checkpoint_config,
    checkpoint_epoch,
    checkpoint_meta,
)
from codetr.analysis.plots import plot_instability
from codetr.utils import register_all_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('paths', nargs='+', help='checkpoints, or work dirs holding epoch_*.pth')
    parser.add_argument('--config', help='config of the run (default: the checkpoint\'s own)')
    parser.add_argument('--out-dir', required=True, help='folder for the PNG and the JSON')
    parser.add_argument('--split', choices=('test', 'val', 'train'), default='test',
                        help='dataset split (read through the test pipeline)')
    parser.add_argument('--max-images', type=int, help='first N images only (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def find_checkpoints(paths: list[str]) -> list[tuple[int | None, str, dict]]:
    """``(epoch, path, meta)`` of every checkpoint named or found in a work dir, by epoch."""
    found = []
    for path in paths:
        if Path(path).is_dir():
            files = sorted(Path(path).glob('epoch_*.pth'))
            if not files:
                raise FileNotFoundError(f'{path} holds no epoch_*.pth checkpoint')
            found += [str(f) for f in files]
        else:
            found.append(path)
    metas = [checkpoint_meta(p) for p in found]
    ordered = [(checkpoint_epoch(p, m), p, m) for p, m in zip(found, metas)]
    if all(epoch is not None for epoch, _, _ in ordered):
        ordered.sort(key=lambda entry: entry[0])
    if len(ordered) < 2:
        raise ValueError(f'instability compares consecutive checkpoints: give at least two, '
                         f'got {[p for _, p, _ in ordered]}')
    return ordered


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    register_all_modules()
    checkpoints = find_checkpoints(args.paths)
    cfg = (Config.fromfile(args.config) if args.config else
           checkpoint_config(checkpoints[0][1], checkpoints[0][2]))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    matchings, num_queries = [], None
    for epoch, path, _ in checkpoints:
        model = build_model(cfg, path)
        num_queries = ins.num_queries_of(model)
        matchings.append(ins.layer_matchings(model, cfg, args.split, args.max_images))
        print(f'matched epoch {epoch} ({path})')
    per_pair = ins.instability_over_checkpoints(matchings, num_queries)
    epochs = [e if e is not None else Path(p).stem for e, p, _ in checkpoints]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_instability(epochs, per_pair, out_dir / 'instability.png')
    pairs = [dict(previous=epochs[i], current=epochs[i + 1], per_layer=layers)
             for i, layers in enumerate(per_pair)]
    report = dict(checkpoints=[p for _, p, _ in checkpoints], epochs=epochs, split=args.split,
                  num_queries=num_queries, pairs=pairs, png=str(out_dir / 'instability.png'))
    (out_dir / 'instability.json').write_text(json.dumps(report, indent=1))
    for pair in pairs:
        fractions = ', '.join(f'{layer["changed_fraction"]:.3f}' for layer in pair['per_layer'])
        print(f'epoch {pair["previous"]} -> {pair["current"]}: changed fraction per layer '
              f'{fractions}')
    print(f'written: {out_dir / "instability.png"}, {out_dir / "instability.json"}')
    return report


if __name__ == '__main__':
    main()
