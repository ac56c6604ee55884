"""Find a config by path, by its path inside the shipped configs, or by its short name.

The rule (``codetr-train`` / ``codetr-test`` / ``codetr-infer`` / ``codetr-browse``,
``tools/*.py`` and :func:`codetr.apis.init_detector` all follow it):

1. an existing file wins (absolute, or relative to the current directory);
2. else a path relative to the configs folder, e.g. ``co_dino/co_dino_5scale_r50_8xb2_1x_coco.py``
   (a leading ``configs/`` and a missing ``.py`` are accepted). The folder is the
   repository's ``configs/`` in a clone (editable install or ``PYTHONPATH``), else the copy
   shipped inside the package (``codetr/.mim/configs`` of a wheel);
3. else, for a name without a folder, a short name: the file name without ``.py``
   (``co_dino_5scale_r50_8xb2_1x_coco``), searched in every sub-folder. Two files of that
   name are an error listing both; no file is an error naming the closest names.

The resolved file is read in place, so ``_base_`` paths relative to it keep working.
"""
from __future__ import annotations

import difflib
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../codetr
PACKAGED_CONFIGS = _PACKAGE_DIR / '.mim' / 'configs'
REPO_CONFIGS = _PACKAGE_DIR.parent / 'configs'


class ConfigNotFoundError(FileNotFoundError):
    """No config file of that path or name; the message lists the closest names."""


class AmbiguousConfigError(ValueError):
    """A short name that names several config files; the message lists them."""


def configs_root() -> Path | None:
    """The configs folder names resolve against: a clone's ``configs/``, else the packaged
    copy; ``None`` if neither exists (a broken install)."""
    # A clone is recognised by its setup.py beside the package, so that an unrelated
    # top-level ``configs`` folder in site-packages is never taken for codetr's.
    if (REPO_CONFIGS / '_base_').is_dir() and (_PACKAGE_DIR.parent / 'setup.py').is_file():
        return REPO_CONFIGS
    if PACKAGED_CONFIGS.is_dir():
        return PACKAGED_CONFIGS
    return None


def list_configs(root: Path | None = None) -> list[str]:
    """Every ``.py`` config under ``root`` (default: :func:`configs_root`), as sorted
    ``/``-separated paths relative to it."""
    root = configs_root() if root is None else root
    if root is None:
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob('*.py')
                  if '__pycache__' not in p.parts)


def resolve_config(name: str | Path, root: Path | None = None) -> str:
    """The config file that ``name`` means, by the rule in this module's docstring.

    Args:
        name: a file path, a path inside the configs folder, or a short name.
        root: the configs folder to search (default: :func:`configs_root`).

    Returns:
        The path of an existing file: ``name`` itself when it exists, else an absolute path.

    Raises:
        ConfigNotFoundError: nothing matches (the message names the closest configs).
        AmbiguousConfigError: a short name matches several files (all are listed).
    """
    text = str(name)
    if Path(text).is_file():
        return text
    root = configs_root() if root is None else root
    if root is None:
        raise ConfigNotFoundError(
            f'Config {text!r} is not a file, and codetr has no configs folder to look in '
            f'(neither {REPO_CONFIGS} nor {PACKAGED_CONFIGS} exists); reinstall codetr.')
    relative = text[len('configs/'):] if text.startswith('configs/') else text
    for candidate in (relative, relative + '.py'):
        path = root / candidate
        if path.is_file():
            return str(path)
    known = list_configs(root)
    if '/' in relative or '\\' in relative:
        raise ConfigNotFoundError(
            f'Config {text!r} is not a file, nor a config under {root}.'
            + _suggest(Path(relative).name, known))
    stem = relative[:-3] if relative.endswith('.py') else relative
    matches = [k for k in known if Path(k).stem == stem]
    if len(matches) == 1:
        return str(root / matches[0])
    if matches:
        raise AmbiguousConfigError(
            f'Config name {stem!r} matches {len(matches)} configs under {root}: '
            f'{", ".join(matches)}. Give one of these paths instead.')
    raise ConfigNotFoundError(
        f'Config {text!r} is not a file, nor a config name under {root}.'
        + _suggest(stem, known))


def _suggest(name: str, known: list[str]) -> str:
    """`` Did you mean: a, b?`` from the configs whose file names are closest to ``name``."""
    stem = name[:-3] if name.endswith('.py') else name
    by_stem: dict[str, list[str]] = {}
    for path in known:
        by_stem.setdefault(Path(path).stem, []).append(path)
    close = difflib.get_close_matches(stem, list(by_stem), n=5, cutoff=0.5)
    if not close:
        return f' {len(known)} configs are there (`codetr-train --help` explains the rule).'
    return ' Did you mean: ' + ', '.join(p for s in close for p in by_stem[s]) + '?'
