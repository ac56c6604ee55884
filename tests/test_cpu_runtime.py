"""codetr's start-up CPU settings: glibc's fixed mmap threshold, torch's huge pages (opt-in)
and a bounded OpenMP spin, each kept when the user set it and each with a switch to turn it off.
Each case runs in a fresh interpreter (the settings are process-wide)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Allocate 5 MB, free it, allocate 5 MB again and count the mmapped blocks it adds to glibc's
# while held. glibc's default raises its threshold to 5 MB on the free, so the second block
# comes from the heap (0 more mmapped blocks); a fixed 4 MB threshold maps it (1 more).
PROBE = """
import ctypes, json, os, sys
sys.path.insert(0, {root!r})
from codetr.cpu_runtime import configure_cpu_runtime
result = configure_cpu_runtime()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',
                'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(5 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(5 << 20)
result['mmapped_blocks'] = libc.mallinfo2().hblks - before
libc.free(block)
print(json.dumps(result))
"""

glibc_only = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')


def probe(env: dict[str, str] | None = None, torch_first: bool = False) -> dict:
    code = PROBE.format(root=str(ROOT))
    if torch_first:  # a stand-in: the function only checks that torch was imported
        code = 'import sys, types\nsys.modules["torch"] = types.ModuleType("torch")\n' + code
    clean = {k: v for k, v in os.environ.items()
             if k not in ('GLIBC_TUNABLES', 'THP_MEM_ALLOC_ENABLE', 'GOMP_SPINCOUNT',
                          'KMP_BLOCKTIME', 'OMP_WAIT_POLICY', 'CODETR_LEAN_MALLOC',
                          'CODETR_OMP_SPIN')}
    out = subprocess.run([sys.executable, '-c', code], env={**clean, **(env or {})},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_by_default_only_the_spin_is_bounded():
    result = probe()
    assert result['applied'] is True
    assert result['mmap_threshold'] is None  # the lean allocator is opt-in (slower here)
    assert result['mmapped_blocks'] == 0  # glibc's dynamic threshold kept the block in the heap
    assert result['THP_MEM_ALLOC_ENABLE'] is None
    assert result['GOMP_SPINCOUNT'] == '10000' and result['KMP_BLOCKTIME'] == '1'


@glibc_only
def test_lean_malloc_fixes_the_threshold_without_huge_pages():
    result = probe({'CODETR_LEAN_MALLOC': '1'})
    assert result['mmap_threshold'] == 4 * 2**20
    assert result['mmapped_blocks'] == 1  # the second 5 MB block has its own mapping again
    assert result['THP_MEM_ALLOC_ENABLE'] is None
    assert result['GOMP_SPINCOUNT'] == '10000' and result['KMP_BLOCKTIME'] == '1'


@glibc_only
def test_switches_turn_each_setting_off():
    result = probe({'CODETR_LEAN_MALLOC': 'off', 'CODETR_OMP_SPIN': 'off'})
    assert result['mmap_threshold'] is None
    assert result['mmapped_blocks'] == 0  # glibc's dynamic threshold kept the block in the heap
    assert result['THP_MEM_ALLOC_ENABLE'] is None and result['GOMP_SPINCOUNT'] is None


@glibc_only
def test_thp_adds_huge_pages_to_the_threshold():
    result = probe({'CODETR_LEAN_MALLOC': 'thp'})
    assert result['mmap_threshold'] == 4 * 2**20 and result['mmapped_blocks'] == 1
    assert result['THP_MEM_ALLOC_ENABLE'] == '1'


@glibc_only
def test_user_settings_are_kept():
    result = probe({'GLIBC_TUNABLES': 'glibc.malloc.mmap_threshold=65536',
                    'CODETR_LEAN_MALLOC': 'thp', 'THP_MEM_ALLOC_ENABLE': '0',
                    'OMP_WAIT_POLICY': 'PASSIVE'})
    assert result['mmap_threshold'] == 'GLIBC_TUNABLES'
    assert result['THP_MEM_ALLOC_ENABLE'] == '0'
    assert result['GOMP_SPINCOUNT'] is None and result['OMP_WAIT_POLICY'] == 'PASSIVE'
    assert probe({'GOMP_SPINCOUNT': '5'})['GOMP_SPINCOUNT'] == '5'


@glibc_only
def test_matrix_floor_replays_on_reused_heap_blocks_then_restores_the_threshold():
    """benchmarks/matrix_floor.py times its products with freed blocks reused (no fresh
    mappings, whatever the allocator settings), then puts codetr's 4 MB threshold back."""
    code = PROBE.format(root=str(ROOT)).replace('print(json.dumps(result))', """
sys.path.insert(0, {bench!r})
from matrix_floor import heap_reuse
def added_mappings(mb):
    libc.free(libc.malloc(mb << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(mb << 20)
    added = libc.mallinfo2().hblks - before
    libc.free(block)
    return added
with heap_reuse() as applied:
    result['inside'] = [applied, added_mappings(5)]
result['after'] = added_mappings(12)  # larger than the heap's freed 5 MB block
print(json.dumps(result))""".format(bench=str(ROOT / 'benchmarks')))
    env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, env={**env, 'CODETR_LEAN_MALLOC': '1'})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['mmapped_blocks'] == 1  # codetr's 4 MB threshold before the replay
    assert result['inside'] == [True, 0]  # 32 MB inside: the 5 MB block comes from the heap
    assert result['after'] == 1  # and 4 MB again after it


@glibc_only
def test_nothing_changes_once_torch_is_loaded():
    result = probe(torch_first=True)
    assert result['applied'] is False
    assert result['mmapped_blocks'] == 0 and result['THP_MEM_ALLOC_ENABLE'] is None


def test_the_commands_apply_it_before_torch_loads():
    for tool in ('codetr/cli/train.py', 'codetr/cli/test.py', 'tools/misc/run_demo.py',
                 'benchmarks/train_step.py', 'benchmarks/inference.py'):
        lines = (ROOT / tool).read_text().splitlines()
        call = next(i for i, ln in enumerate(lines) if 'configure_cpu_runtime()' in ln)
        first_torch = next(i for i, ln in enumerate(lines)
                           if ln.startswith(('import torch', 'from mmengine', 'import cv2')))
        assert call < first_torch, tool


@glibc_only
@pytest.mark.parametrize('module', [  # each imports torch in a fresh process (~2 s)
    'codetr.cli.train', pytest.param('codetr.cli.test', marks=pytest.mark.slow)])
def test_console_commands_start_with_it(module):
    """codetr-train / codetr-test (and tools/train.py, tools/test.py, which import the same
    modules) get the settings: importing the command's module applies them before torch."""
    code = (f'import sys; sys.path.insert(0, {str(ROOT)!r})\n'
            f'import json, os, {module}\n'
            'print(json.dumps({n: os.environ.get(n) for n in '
            '("THP_MEM_ALLOC_ENABLE", "GOMP_SPINCOUNT")}))')
    clean = {k: v for k, v in os.environ.items()
             if k not in ('THP_MEM_ALLOC_ENABLE', 'GOMP_SPINCOUNT', 'OMP_WAIT_POLICY',
                          'CODETR_LEAN_MALLOC', 'CODETR_OMP_SPIN')}
    out = subprocess.run([sys.executable, '-c', code], env=clean, capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {'THP_MEM_ALLOC_ENABLE': None,
                                                         'GOMP_SPINCOUNT': '10000'}
