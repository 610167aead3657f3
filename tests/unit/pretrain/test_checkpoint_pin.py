"""pretrain.checkpoint's pinned last-good checkpoint (issue 17): the pure rotation rule against hand values,
a non-finite loss refused before anything is written, a run of spike ("suspect") saves that cannot rotate the
last good checkpoint out (which then loads back the good weights), and pre-meta.json checkpoints as good.
Real files and a real torch.distributed.checkpoint round trip, single process."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pretrain import checkpoint

# dcp saves/loads in one process without an initialised process group, which is what save()/load() do here
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")

STEPS = [100, 200, 300, 400, 500, 600]


def records(suspect: set[int]) -> list[tuple[int, bool]]:
    return [(s, s in suspect) for s in STEPS]


@pytest.mark.parametrize(("suspect", "keep", "deleted"), [
    ({400, 500, 600}, 3, {100, 200}),            # the case: 300 is pinned
    (set(), 3, {100, 200, 300}),                 # all good: plain newest-3
    ({600}, 3, {100, 200, 300}),                 # newest good (500) already within the newest 3
    ({100, 200, 300, 400, 500, 600}, 3, {100, 200, 300}),  # nothing good: nothing to pin
    ({500, 600}, 1, {100, 200, 300, 500}),       # keep=1: 600 kept, 400 pinned, suspect 500 goes
    ({200, 300, 400, 500, 600}, 2, {200, 300, 400}),  # the only good one is the oldest
    (set(), 10, set()),                          # fewer than keep
])
def test_rotation_hand_values(suspect, keep, deleted):
    assert checkpoint.rotation(records(suspect), keep) == deleted
    assert checkpoint.rotation(list(reversed(records(suspect))), keep) == deleted  # input order is irrelevant


def test_rotation_edge_cases():
    assert checkpoint.rotation([], 3) == set()
    with pytest.raises(ValueError, match="keep"):
        checkpoint.rotation(records(set()), 0)


def make(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt


def train_step(model, opt) -> None:
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()


def names(root) -> list[str]:
    return sorted(p.name for p in root.iterdir())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_is_refused_and_nothing_written(tmp_path, bad):
    root = tmp_path / "ckpt"
    model, opt = make(0)
    train_step(model, opt)
    with pytest.raises(ValueError, match=r"step 7\b.*" + str(bad).replace("+", "")):
        checkpoint.save(root, 7, model, opt, {"step": 7}, keep=3, loss=bad, suspect=True)
    assert not root.exists()  # not even the root, let alone step-0000007 or step-0000007.partial

    checkpoint.save(root, 5, model, opt, {"step": 5}, keep=3, loss=2.5)
    with pytest.raises(ValueError, match="step 8"):
        checkpoint.save(root, 8, model, opt, {"step": 8}, keep=3, loss=bad)
    assert names(root) == ["step-0000005"]
    assert json.loads((root / "step-0000005" / "meta.json").read_text()) == {"step": 5, "loss": 2.5,
                                                                            "suspect": False, "settings": None}


def test_spike_saves_cannot_rotate_out_the_last_good(tmp_path):
    root = tmp_path / "ckpt"
    model, opt = make(0)
    for step in (1, 2):
        train_step(model, opt)
        checkpoint.save(root, step, model, opt, {"step": step}, keep=3, loss=3.0 - step)
    good_weight = model.weight.detach().clone()
    good_exp_avg = opt.state[model.weight]["exp_avg"].clone()
    for step in (3, 4, 5, 6):  # more spike saves than `keep`
        with torch.no_grad():
            model.weight.mul_(100.0)
        checkpoint.save(root, step, model, opt, {"step": step}, keep=3, loss=50.0 * step, suspect=True)

    assert names(root) == ["step-0000002", "step-0000004", "step-0000005", "step-0000006"]
    assert [p.name for p in checkpoint.step_dirs(root)] == names(root)  # newest last
    assert checkpoint.last_good(root) == root / "step-0000002"
    assert checkpoint.read_meta(root / "step-0000006") == {"step": 6, "loss": 300.0, "suspect": True, "settings": None}
    assert checkpoint.read_meta(root / "step-0000002") == {"step": 2, "loss": 1.0, "suspect": False, "settings": None}

    fresh, fresh_opt = make(1)
    assert not torch.equal(fresh.weight, good_weight)
    extra = checkpoint.load(checkpoint.last_good(root), fresh, fresh_opt)
    assert extra == {"step": 2}
    assert torch.equal(fresh.weight, good_weight)
    assert torch.equal(fresh_opt.state[fresh.weight]["exp_avg"], good_exp_avg)

    # a good save again: the pin moves to it and the old pin is rotated out
    checkpoint.save(root, 7, model, opt, {"step": 7}, keep=3, loss=1.5)
    assert names(root) == ["step-0000005", "step-0000006", "step-0000007"]
    assert checkpoint.last_good(root) == root / "step-0000007"


def test_old_style_dirs_without_meta_are_good(tmp_path):
    root = tmp_path / "ckpt"
    model, opt = make(0)
    for step in (10, 20):
        train_step(model, opt)
        checkpoint.save(root, step, model, opt, {"step": step}, keep=3)
        (root / f"step-{step:07d}" / "meta.json").unlink()  # as written before meta.json existed
    assert checkpoint.read_meta(root / "step-0000020") == {"step": 20, "loss": None, "suspect": False, "settings": None}
    assert checkpoint.last_good(root) == root / "step-0000020"

    for step in (30, 40, 50, 60):
        checkpoint.save(root, step, model, opt, {"step": step}, keep=3, loss=9.0, suspect=True)
    assert names(root) == ["step-0000020", "step-0000040", "step-0000050", "step-0000060"]
    assert checkpoint.last_good(root) == root / "step-0000020"


def test_last_good_none_and_partial_ignored(tmp_path):
    root = tmp_path / "ckpt"
    assert checkpoint.last_good(root) is None
    model, opt = make(0)
    checkpoint.save(root, 1, model, opt, {"step": 1}, keep=3, loss=1.0, suspect=True)
    assert checkpoint.last_good(root) is None
    (root / "step-0000009.partial").mkdir()  # an interrupted save is neither complete nor good
    assert [p.name for p in checkpoint.step_dirs(root)] == ["step-0000001"]
    assert checkpoint.last_good(root) is None


def test_an_unreadable_meta_is_kept_not_fatal(tmp_path):
    """Rotation runs on rank 0 between two barriers: a corrupt meta.json there must not raise (the other ranks
    would hang); the checkpoint counts as good and is kept."""
    import torch

    from pretrain import checkpoint

    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    root = tmp_path / "ckpt"
    first = checkpoint.save(root, 1, model, opt, {"step": 1}, keep=1, loss=1.0)
    (first / checkpoint.META).write_text("{not json")
    checkpoint.save(root, 2, model, opt, {"step": 2}, keep=1, loss=1.0, suspect=True)
    checkpoint.save(root, 3, model, opt, {"step": 3}, keep=1, loss=1.0, suspect=True)
    assert [p.name for p in checkpoint.step_dirs(root)] == ["step-0000001", "step-0000003"]
