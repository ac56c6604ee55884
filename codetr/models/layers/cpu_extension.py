"""Compile-on-first-use C++ CPU kernels (torch's extension loader), shared by the ops that
have them. A build is cached under ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``) and redone when the source changes; it needs a C++ compiler
and ninja (a requirement, installed beside Python)."""
from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

_lock = threading.Lock()
_loaded: set[str] = set()


def load_cpu_extension(name: str, source: Path, verbose: bool = False) -> None:
    """Build (first time) and load ``source`` as the extension ``name``; its
    ``TORCH_LIBRARY`` ops then exist under ``torch.ops``.

    Raises:
        ImportError: no compiler or ninja, or the build failed (the message says which).
    """
    with _lock:
        if name in _loaded:
            return
        if shutil.which('ninja') is None:  # the pip package installs it beside python
            bin_dir = Path(sys.executable).parent
            if (bin_dir / 'ninja').exists():
                os.environ['PATH'] = f'{bin_dir}{os.pathsep}{os.environ.get("PATH", "")}'
        try:
            from torch.utils.cpp_extension import load
            load(name=name, sources=[str(source)], is_python_module=False,
                 extra_cflags=['-O3', '-fno-math-errno'], verbose=verbose)
        except Exception as err:  # compiler missing, ninja missing, build error
            raise ImportError(f'could not build the CPU kernels of {source}: {err}') from err
        _loaded.add(name)
