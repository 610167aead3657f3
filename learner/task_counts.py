"""What an RLVR run does with its tasks, in numbers: logged as one line at start and kept in the summary under
`tasks`. A task file that loses tasks to `tasks.tiers`, has no held-out tasks or fewer train tasks than
`rollout.prompts_per_step` trains quite differently from what its size suggests; these counts say so."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TaskCounts:
    source: str
    loaded: int  # tasks in tasks.source
    tiers: list[int] | None  # tasks.tiers: the tiers kept (None: every task)
    dropped_by_tier: int
    dropped_tiers: list[int | None]  # the tiers of the dropped tasks (None: a task without a tier)
    train: int
    heldout: int
    prompts_per_step: int
    steps: int  # run.steps
    epochs_per_step: float  # passes over the train tasks per step: > 1 means tasks repeat within a step
    prompts_per_task: tuple[int, int]  # (fewest, most) times one train task is prompted over run.steps
    skipped: int = 0  # invalid records skipped under tasks.lenient (not in `loaded`)

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """`tasks: 68 loaded from embedded; tiers [0] kept 24, dropped 44 (tiers 1, 2); 16 train, 8 held out;
        8 prompts per step = 0.5 passes over the train tasks; over 3 steps each train task is prompted 1-2 times`
        (configs/rlvr/tiny-cpu.yaml)."""
        tiers = "no tier filter"
        if self.tiers is not None:
            tiers = f"tiers {self.tiers} kept {self.loaded - self.dropped_by_tier}, dropped {self.dropped_by_tier}"
            if self.dropped_tiers:
                tiers += f" (tiers {', '.join('none' if t is None else str(t) for t in self.dropped_tiers)})"
        if self.epochs_per_step == int(self.epochs_per_step):  # whole passes: every task equally often per step
            per_step = f"each train task {int(self.epochs_per_step)}x per step"
        else:
            per_step = (f"{self.epochs_per_step:.3g} passes over the train tasks"
                        + (" (tasks repeat within a step)" if self.epochs_per_step > 1 else ""))
        low, high = self.prompts_per_task
        times = f"{low}" if low == high else f"{low}-{high}"
        no_eval = "" if self.heldout else " (no held-out evaluation: the summary's eval_* are null)"
        skipped = f" ({self.skipped} invalid records skipped: tasks.lenient)" if self.skipped else ""
        return (f"tasks: {self.loaded} loaded from {self.source}{skipped}; {tiers}; {self.train} train, {self.heldout} held out"
                f"{no_eval}; "
                f"{self.prompts_per_step} prompts per step = {per_step}; over {self.steps} steps each train task "
                f"is prompted {times} times")


def count_tasks(source: str, loaded_tiers: Sequence[int | None], tiers: list[int] | None, train: int, heldout: int,
                prompts_per_step: int, steps: int, skipped: int = 0) -> TaskCounts:
    """The counts for tasks whose tiers are `loaded_tiers`, filtered by `tiers` and split into `train` and
    `heldout`. The prompt stream is the train tasks in a seeded order, one pass (epoch) after another
    (rollout.producer.prompt_order), and each step takes its next `prompts_per_step`: so over the run each
    task is prompted floor or ceil of steps x prompts_per_step / train times. Dynamic sampling's refill prompts
    are extra draws and not counted."""
    dropped = [t for t in loaded_tiers if tiers is not None and t not in tiers]
    full, rest = divmod(steps * prompts_per_step, train)
    return TaskCounts(source=source, loaded=len(loaded_tiers), tiers=tiers, dropped_by_tier=len(dropped),
                      dropped_tiers=sorted(set(dropped), key=lambda t: (t is None, t or 0)), train=train,
                      heldout=heldout, prompts_per_step=prompts_per_step, steps=steps,
                      epochs_per_step=prompts_per_step / train, prompts_per_task=(full, full + (rest > 0)),
                      skipped=skipped)

