"""Training progress bars: a finished or early-stopped unit says so and its clock stops."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nexlify.commands.train import RichProgressSink
from nexlify.train.config import TrainConfig
from tests.test_training_practices import _tiny_trainer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _bars(console: Console, clock: FakeClock) -> Progress:
    columns = (TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("episodes"), TimeElapsedColumn())  # fmt: skip
    return Progress(*columns, console=console, get_time=clock, auto_refresh=False)


def test_an_early_stopped_bar_says_so_and_its_clock_stops() -> None:
    console, clock = Console(record=True, width=120, force_terminal=False), FakeClock()
    with _bars(console, clock) as bars:
        sink = RichProgressSink(bars)
        sink.update("run_1", 100, 300)
        clock.now = 65.0
        sink.update("run_1", 216, 300)
        sink.update("run_1", 216, 216)  # the trainer's last call when it stops early
        sink.update("run_2", 300, 300)  # a unit that ran all its episodes
        clock.now = 3600.0  # an hour later the pipeline ends: the clocks must not have run on
    text = console.export_text()
    assert "run_1 stopped early at 216/300 (patience)" in text
    assert "216/300" in text.split("run_1 stopped early")[1]  # the bar keeps the planned total
    assert "run_2 done" in text
    (line,) = [row for row in text.splitlines() if "run_1" in row]
    assert "0:01:05" in line and "1:00:00" not in line
    (task,) = [t for t in bars.tasks if t.description.startswith("run_1")]
    assert task.stop_time == 65.0 and task.completed == 216 and task.total == 300


def test_a_running_bar_keeps_its_label_and_clock() -> None:
    console, clock = Console(record=True, width=120), FakeClock()
    with _bars(console, clock) as bars:
        RichProgressSink(bars).update("run_1", 5, 300)
        clock.now = 10.0
        (task,) = bars.tasks
        assert task.description == "run_1" and task.stop_time is None and task.elapsed == 10.0


def test_the_trainer_ends_an_early_stopped_unit_with_done_as_total() -> None:
    practices = TrainConfig(early_stopping_patience=1, early_stopping_min_delta=1e9, swa=False,
                            augment=False, curriculum=False)  # fmt: skip
    calls: list[tuple[int, int]] = []
    result = _tiny_trainer(practices).train(24, progress=lambda d, t: calls.append((d, t)))
    assert result.stopped_early and result.episodes == 8
    assert calls[-1] == (8, 8) and calls[-2] == (8, 24)
    assert all(total == 24 for _, total in calls[:-1])
