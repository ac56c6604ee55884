"""Print a config after ``_base_`` inheritance and ``--cfg-options``: ``print_config.py CONFIG``.

CONFIG is a file, a path under the configs folder or a short name (``resolve_config``).
"""
from __future__ import annotations

import argparse

from mmengine.config import Config, DictAction

from codetr.utils import resolve_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Print the full config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.lambda_2=1.0')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    cfg = Config.fromfile(resolve_config(args.config))
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    text = cfg.pretty_text
    print(f'Config:\n{text}')
    return text


if __name__ == '__main__':
    main()
