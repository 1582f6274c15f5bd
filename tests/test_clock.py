"""The budget clock sizes the cosine schedule to end with the budget, also when step times change."""

from types import SimpleNamespace

import pytest

from selfsup.train import engine


def run_clock(monkeypatch, step_seconds, budget_s: float = 100.0) -> tuple[int, int]:
    """Drive ``Clock`` with fake steps; returns (steps run, the schedule's final total_steps)."""
    now = [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: now[0])
    clock = engine.Clock(budget_s)
    trainer = SimpleNamespace(global_step=0, should_stop=False)
    module = SimpleNamespace(elapsed=0.0, total_steps=None, device="cpu")
    clock.on_train_start(trainer, module)
    while not trainer.should_stop:
        now[0] += step_seconds(now[0])
        trainer.global_step += 1
        clock.on_train_batch_end(trainer, module)
    return trainer.global_step, module.total_steps


def test_steady_steps_end_the_schedule_with_the_budget(monkeypatch):
    steps, total = run_clock(monkeypatch, lambda t: 0.5)
    assert steps == 200 and total == pytest.approx(200, abs=1)


@pytest.mark.parametrize("slow_first", [True, False])
def test_schedule_follows_a_machine_that_gets_busier_or_quieter(monkeypatch, slow_first):
    # 1 s per step for the first 20 s (another job running), then 0.5 s; or the other way round
    def step_seconds(t):
        return (1.0 if t < 20 else 0.5) if slow_first else (0.5 if t < 20 else 1.0)

    steps, total = run_clock(monkeypatch, step_seconds)
    assert steps == pytest.approx(total, rel=0.03)  # no steps wasted past the schedule, none cut short


def test_timed_checkpoints_follow_the_clock(monkeypatch, tmp_path):
    """Step saves every 1,000 steps never come in 100 steps; saves every 20 s of training do."""
    import torch

    now = [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: now[0])
    saved: list[int] = []
    trainer = SimpleNamespace(global_step=0, should_stop=False, is_global_zero=True,
                              save_checkpoint=lambda path, weights_only: saved.append(trainer.global_step))
    module = SimpleNamespace(elapsed=0.0, total_steps=None, device="cpu",
                             parameters=lambda: [torch.zeros(2)])
    clock, ckpt = engine.Clock(None), engine.StepCheckpoint(tmp_path, every=1000, every_s=20.0)
    clock.on_train_start(trainer, module)
    ckpt.on_train_start(trainer, module)
    for _ in range(100):
        now[0] += 1.0
        trainer.global_step += 1
        clock.on_train_batch_end(trainer, module)
        ckpt.on_train_batch_end(trainer, module)
    assert saved == [20, 40, 60, 80, 100]


def test_cpu_clock_counts_compute_not_waiting(monkeypatch):
    """With clock="cpu" the budget is this process's CPU time: a machine busy with other jobs (wall time
    running 3x faster than the CPU time this run gets) still gives the run its whole budget of compute."""
    wall, cpu = [0.0], [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: wall[0])
    monkeypatch.setattr(engine.time, "process_time", lambda: cpu[0])
    clock = engine.Clock(100.0, clock="cpu")
    trainer = SimpleNamespace(global_step=0, should_stop=False)
    module = SimpleNamespace(elapsed=0.0, total_steps=None, device="cpu")
    clock.on_train_start(trainer, module)
    while not trainer.should_stop:
        cpu[0] += 0.5
        wall[0] += 1.5
        trainer.global_step += 1
        clock.on_train_batch_end(trainer, module)
    assert trainer.global_step == 200 and module.elapsed == pytest.approx(100.0)


def test_snapshots_are_kept_once_each_when_training_time_passes_them():
    saved: list[str] = []
    snaps = engine.Snapshots(["10s", "5s"], saved.append)
    trainer = SimpleNamespace(is_global_zero=True)
    module = SimpleNamespace(elapsed=0.0)
    for t in (1.0, 4.9, 5.0, 7.0, 12.0, 20.0):
        module.elapsed = t
        snaps.on_train_batch_end(trainer, module)
    assert saved == ["5s", "10s"]
