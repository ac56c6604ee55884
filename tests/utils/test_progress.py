"""Progress: lines with rate and ETA in logs, a redrawn bar on terminals, rank 0 only."""
import io

import pytest

import codetr.utils.progress as progress_module
from codetr.utils.progress import Progress, format_seconds, track


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress_module.time, 'perf_counter', fake)
    return fake


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_a_line_per_interval_with_rate_and_eta(clock):
    out = io.StringIO()
    progress = Progress(40, 'val', unit='images', file=out, interval=10, enabled=True)
    clock.now += 4
    progress.update(8)      # 4 s < 10 s: nothing yet
    assert out.getvalue() == ''
    clock.now += 6
    progress.update(12)     # 20 images in 10 s: 2 images/s, 20 left -> ETA 10 s
    assert out.getvalue() == ('val: 20/40 images [##############..............]  50% '
                              '2 images/s, 10s, ETA 10s\n')
    clock.now += 10
    progress.update(25)     # clamped to the total
    progress.close()
    progress.close()        # once only
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1] == 'val: 40/40 images [############################] 100% 2 images/s, 20s'


def test_terminal_gets_a_bar_redrawn_in_place(clock):
    out = Terminal()
    with Progress(4, 'infer', unit='images', file=out, enabled=True) as progress:
        for _ in range(4):
            clock.now += 0.5
            progress.update()
    text = out.getvalue()
    assert text.count('\r') == 5 and text.endswith('\n')  # 4 updates + the final redraw
    assert '\rinfer: 2/4 images [' in text and 'ETA 1s' in text


def test_unknown_total_and_disabled(clock, monkeypatch):
    out = io.StringIO()
    with Progress(None, 'convert', file=out, enabled=True) as progress:
        clock.now += 2
        progress.update(3)
    assert out.getvalue() == 'convert: 3 it 1.5 it/s, 2s\n'
    monkeypatch.setattr('mmengine.dist.get_rank', lambda: 1)
    quiet = io.StringIO()
    assert list(track(range(3), 'x', file=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ''  # rank 1 stays silent
    monkeypatch.setattr('mmengine.dist.get_rank', lambda: 0)
    monkeypatch.setenv('CODETR_PROGRESS', '0')
    assert not progress_module.progress_enabled()
    monkeypatch.setenv('CODETR_PROGRESS', '1')
    assert progress_module.progress_enabled()


def test_track_counts_items_and_writes_the_final_line():
    out = io.StringIO()
    assert list(track(['a', 'b'], 'browse', unit='images', file=out, enabled=True)) == ['a', 'b']
    assert out.getvalue().startswith('browse: 2/2 images [')


def test_format_seconds():
    assert [format_seconds(s) for s in (0.4, 42, 185, 3725)] == ['0s', '42s', '3m05s', '1h02m']
