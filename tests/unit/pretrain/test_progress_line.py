"""Pretraining's progress when stderr is not a terminal: a plain line every N steps (tqdm stays quiet there)."""

from __future__ import annotations

from pretrain.monitor import Monitor, progress_line


def test_progress_line_by_hand():
    m = {"train/loss": 3.21449, "val/bpb": 1.8724, "perf/tokens_per_s": 41230.4}
    assert progress_line(40, 600, 0, 30.0, m) == "pretrain step 40/600 | loss 3.214 | val_bpb 1.872 | 41230 tok/s | ETA 7m00s"
    assert progress_line(600, 600, 0, 450.0, {"train/loss": 1.0}) == "pretrain step 600/600 | loss 1.000"
    # after a resume the ETA counts only this run's steps
    assert progress_line(110, 200, 100, 10.0, {"train/loss": 2.0}).endswith("ETA 1m30s")


def test_a_log_file_gets_a_line_every_n_steps(tmp_path, capsys):
    monitor = Monitor(tmp_path, total_steps=10, start_step=0, enabled=True, tensorboard=False, wandb_project=None,
                      config={}, progress_every=4)
    for step in range(1, 11):
        monitor.log(step, {"train/loss": 1.0 / step})
    monitor.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pretrain step")]
    assert [line.split(" | ")[0] for line in lines] == ["pretrain step 4/10", "pretrain step 8/10", "pretrain step 10/10"]
