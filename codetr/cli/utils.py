"""What the console commands share: config look-up, ``sys.path`` and error exits."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from mmengine.config import Config

from codetr.utils.config_path import AmbiguousConfigError, ConfigNotFoundError, resolve_config

CONFIG_HELP = ('config: a file, a path under configs/ (co_dino/co_dino_5scale_r50_8xb2_1x_coco.py) '
               'or a short name (co_dino_5scale_r50_8xb2_1x_coco)')


def command_name(command: str, script: str) -> str:
    """``command`` when run as that console command, else the repository ``script`` path;
    used as the argparse ``prog`` and in error messages."""
    return command if Path(sys.argv[0]).name == command else script


def fail(prog: str, message: str) -> NoReturn:
    """Exit with ``<prog>: error: <message>`` (argparse's format, exit status 1)."""
    raise SystemExit(f'{prog}: error: {message}')


def add_cwd_to_sys_path() -> None:
    """Append the current directory to ``sys.path`` (last, so that it never shadows an
    installed package), so that ``custom_imports`` of the directory's own modules, such
    as ``projects.my_head``, import from a console command as they do from ``python -m``."""
    cwd = os.getcwd()
    entries = {os.path.abspath(p or os.curdir) for p in sys.path}
    if cwd not in entries:
        sys.path.append(cwd)


def load_config(name: str, prog: str) -> Config:
    """The config that ``name`` means (a path or a short name), read with its ``_base_``
    files and ``custom_imports`` (the current directory on ``sys.path`` first)."""
    add_cwd_to_sys_path()
    try:
        path = resolve_config(name)
    except (ConfigNotFoundError, AmbiguousConfigError) as err:
        fail(prog, str(err))
    return Config.fromfile(path)
