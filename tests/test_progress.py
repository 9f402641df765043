"""Progress: a tqdm bar on a terminal; in a log file or CI, a line when work starts, a progress line at most every
`every` seconds, and a line when it ends (no carriage-return frames)."""

import logging

import featureflow.progress as progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_off_a_terminal_one_line_per_start_end_and_interval(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="featureflow")
    bar = progress.LogProgress(range(1000), desc="train x", unit="step", every=30, clock=clock)
    for i in bar:
        clock.t += 0.1  # 100 s in all: progress lines at 30, 60 and 90 s
        if i == 500:
            bar.set_postfix(loss="1.234")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train x: started (1,000 step)"
    assert len(lines) == 5 and all(": at " in line for line in lines[1:4])
    assert lines[1].startswith("train x: at 300/1,000 step (30%) in 30.0 s")
    assert lines[-1].startswith("train x: done 1,000/1,000 step (100%) in 100.0 s, 10.0 step/s")
    assert lines[-1].endswith("loss 1.234") and not any("\r" in line for line in lines)


def test_manual_updates_without_a_total_and_close_once(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="featureflow")
    with progress.LogProgress(desc="sweep", unit="eval", clock=clock) as bar:
        for _ in range(3):
            clock.t += 5
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["sweep: started", "sweep: done 3 eval in 15.0 s, 0.2 eval/s"]


def test_disabled_bar_is_silent(caplog):
    caplog.set_level(logging.INFO, logger="featureflow")
    assert list(progress.LogProgress([1, 2], desc="x", disable=True)) == [1, 2]
    assert not caplog.records


def test_a_bar_on_a_terminal_and_log_lines_elsewhere(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: False)
    assert isinstance(progress.progress(range(3), desc="x"), progress.LogProgress)
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)
    bar = progress.progress(range(3), desc="x", every=10)
    assert isinstance(bar, tqdm)
    bar.close()


def test_other_libraries_bars_are_switched_off_only_off_a_terminal(monkeypatch):
    for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(var, "")  # recorded, so the test leaves the environment as it found it
        monkeypatch.delenv(var)
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)
    progress.quiet_other_bars()
    import os

    assert "TQDM_DISABLE" not in os.environ
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: False)
    progress.quiet_other_bars()
    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
