"""The pipeline's one-file HTML report (plots as embedded PNGs, no network) and its learning check.

Reads only what the stages wrote: pretrain's and SFT's metrics.jsonl, each RLVR run's metrics.jsonl and
summary, and the held-out evaluation of every checkpoint (`learner.evaluate`)."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from matplotlib.figure import Figure

from learner.metrics import read_metrics
from learner.report import _png, integer_steps

VERDICT_COLORS = {"OK": "#2ca02c", "WRONG_ANSWER": "#ff7f0e", "COMPILE_ERROR": "#d62728", "RUNTIME_ERROR": "#9467bd",
                  "TIME_LIMIT": "#8c564b", "MEMORY_LIMIT": "#e377c2", "OUTPUT_LIMIT": "#7f7f7f",
                  "SANDBOX_ERROR": "#000000"}


# ---- numbers ------------------------------------------------------------------------------------------------
def tier_scores(summary: dict, tiers: list[int]) -> dict:
    """pass@1 (task-weighted) and mean reward (sample-weighted) over the given tiers of an eval summary."""
    parts = [summary["by_tier"][f"tier{t}"] for t in tiers if f"tier{t}" in summary.get("by_tier", {})]
    tasks, scored = sum(p["tasks"] for p in parts), sum(p["scored"] for p in parts)
    if not tasks or not scored:
        return {"pass@1": None, "reward_mean": None, "tasks": tasks, "samples": scored}
    return {"pass@1": round(sum(p["pass@1"] * p["tasks"] for p in parts) / tasks, 4),
            "reward_mean": round(sum(p["reward_mean"] * p["scored"] for p in parts) / scored, 4),
            "tasks": tasks, "samples": scored}


def learning_table(evals: dict, rlvr_runs: list[dict], tiers: list[int], min_gain: float, metric: str,
                   start: str = "sft") -> dict:
    """RLVR against its starting point (`start`: the SFT policy, or pretraining's / your own model when SFT is
    skipped) on the easiest tier(s), per seed, on the held-out evaluation; plus the learner's own held-out
    evaluation before the first and after the last step. The start's scores are under "sft" (its usual name)."""
    sft = tier_scores(evals[start]["summary"], tiers)
    seeds = []
    for run in rlvr_runs:
        mine = tier_scores(evals[f"rlvr/seed-{run['seed']}"]["summary"], tiers)
        s = run["summary"]
        gain = None if mine[metric] is None or sft[metric] is None else round(mine[metric] - sft[metric], 4)
        seeds.append({"seed": run["seed"], **mine, "gain": gain,
                      "learner_eval_reward_first": s.get("eval_reward_first"),
                      "learner_eval_reward_last": s.get("eval_reward_last"),
                      "learner_eval_pass_first": s.get("eval_pass_first"), "learner_eval_pass_last": s.get("eval_pass_last")})
    return {"tiers": tiers, "metric": metric, "min_gain": min_gain, "start": start, "sft": sft, "seeds": seeds,
            "improved_every_seed": all(s["gain"] is not None and s["gain"] >= min_gain for s in seeds)}


# ---- plots --------------------------------------------------------------------------------------------------
def _axes(title: str, xlabel: str, ylabel: str, width: float = 6.0):
    fig = Figure(figsize=(width, 3.4))
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _points(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_pretrain(rows: list[dict]) -> str | None:
    fig, ax = _axes("Pretraining: loss and validation bits per byte", "step", "train loss")
    integer_steps(ax)
    steps, loss = _points(rows, "train/loss")
    if not steps:
        return None
    ax.plot(steps, loss, lw=0.8, color="C0", label="train loss")
    bpb_steps, bpb = _points(rows, "val/bpb")
    if bpb_steps:
        twin = ax.twinx()
        twin.plot(bpb_steps, bpb, "o-", color="C3", label="val BPB")
        twin.set_ylabel("val bits per byte", color="C3")
    fig.legend(loc="upper right", fontsize="small")
    return _png(fig)


def plot_sft(rows: list[dict]) -> str | None:
    fig, ax = _axes("SFT: training and eval loss (prompt masked)", "step", "loss")
    integer_steps(ax)
    steps, loss = _points(rows, "loss")
    eval_steps, eval_loss = _points(rows, "eval_loss")
    if not steps and not eval_steps:
        return None
    ax.plot(steps, loss, color="C0", label="train loss")
    ax.plot(eval_steps, eval_loss, "o-", color="C1", label="eval loss")
    ax.legend(fontsize="small")
    return _png(fig)


def plot_rewards(rlvr_runs: list[dict]) -> str | None:
    fig, ax = _axes("RLVR: mean reward of the rollouts per GRPO step", "step", "reward")
    integer_steps(ax)
    drawn = False
    for i, run in enumerate(rlvr_runs):
        rows = read_metrics(Path(run["summary"]["out_dir"]) / "metrics.jsonl")
        steps, reward = _points(rows, "reward_mean")
        if steps:
            ax.plot(steps, reward, "-", color=f"C{i}", label=f"seed {run['seed']} (train prompts)")
            drawn = True
        first, last = run["summary"].get("eval_reward_first"), run["summary"].get("eval_reward_last")
        if first is not None and last is not None and steps:
            ax.plot([-0.5, steps[-1] + 0.5], [first, last], "o--", color=f"C{i}", alpha=0.6,
                    label=f"seed {run['seed']} held-out, before/after")
    if not drawn:
        return None
    ax.legend(fontsize="x-small", loc="lower right")
    return _png(fig)


def plot_pass(stage_scores: dict[str, dict]) -> str:
    """Grouped bars per stage, all held-out tasks and the easiest tier: pass@1 (left) and mean reward (right,
    which also moves when programs start to compile or pass some tests)."""
    fig = Figure(figsize=(12, 3.4))
    names = list(stage_scores)
    width = 0.38
    for ax, (metric, title), keys in zip(fig.subplots(1, 2), (("pass@1", "Held-out pass@1 per stage"),
                                                           ("mean reward", "Held-out mean reward per stage")),
                                         (("all", "easy"), ("reward", "easy_reward"))):
        for j, (key, label) in enumerate(zip(keys, ("all held-out tasks", "easiest tier"))):
            values = [stage_scores[n][key] or 0.0 for n in names]
            bars = ax.bar([i + (j - 0.5) * width for i in range(len(names))], values, width, label=label,
                          color=f"C{j}")
            ax.bar_label(bars, fmt="%.2f", fontsize="x-small")
        ax.set_title(title)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.axhline(0, color="black", lw=0.6)
        if metric == "pass@1":  # a rate: from 0, with room above the highest bar
            ax.set_ylim(0, max(0.1, *(stage_scores[n][k] or 0.0 for n in names for k in keys)) * 1.25)
        ax.set_xticks(range(len(names)), names, fontsize="small")
        ax.legend(fontsize="small")
    return _png(fig)


def plot_revision(evals: dict) -> str | None:
    """eval.turns > 1: held-out pass@1 of the first attempts and after the sandbox's feedback, per stage."""
    names = [n for n in evals if "first_try" in evals[n]["summary"]]
    if not names:
        return None
    fig, ax = _axes("Held-out pass@1: first try and after feedback", "stage", "pass@1")
    width = 0.38
    for j, (label, value) in enumerate((("first try", lambda sm: sm["first_try"].get("pass@1")),
                                        ("after feedback", lambda sm: sm.get("pass@1")))):
        values = [value(evals[n]["summary"]) or 0.0 for n in names]
        bars = ax.bar([i + (j - 0.5) * width for i in range(len(names))], values, width, label=label, color=f"C{j + 2}")
        ax.bar_label(bars, fmt="%.2f", fontsize="x-small")
    ax.set_xticks(range(len(names)), names, fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small")
    return _png(fig)


def plot_verdicts(evals: dict) -> str:
    fig, ax = _axes("Verdict mix of the held-out samples", "stage", "fraction of samples")
    names = list(evals)
    bottoms = [0.0] * len(names)
    verdicts = [v for v in VERDICT_COLORS if any(v in evals[n]["summary"]["verdicts"] for n in names)]
    for v in verdicts:
        fractions = [evals[n]["summary"]["verdicts"].get(v, 0) / max(evals[n]["summary"]["samples"], 1) for n in names]
        ax.bar(range(len(names)), fractions, bottom=bottoms, color=VERDICT_COLORS[v], label=v)
        bottoms = [b + f for b, f in zip(bottoms, fractions)]
    ax.set_xticks(range(len(names)), names, fontsize="small")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="x-small")
    return _png(fig)


def plot_time(seconds: dict) -> str:
    fig, ax = _axes("Wall time per stage", "seconds", "", width=6.0)
    names = list(seconds)
    bars = ax.barh(names, [seconds[n] for n in names], color="C0")
    ax.bar_label(bars, fmt="%.0f s", fontsize="small")
    ax.invert_yaxis()
    return _png(fig)


def common_completions(out: Path, names: list[str], tiers: list[int], top: int = 3) -> list[list]:
    """The `top` most frequent completions of each checkpoint on the given tiers (eval/*.samples.jsonl; tiers
    are read from embedded task ids, crucible/t<N>/...):
    a number says how much moved, these say what moved."""
    from collections import Counter

    prefixes = tuple(f"/t{t}/" for t in tiers)
    rows = []
    for name in names:
        path = out / "eval" / f"{name.replace('/', '-')}.samples.jsonl"
        if not path.exists():
            continue
        samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        samples = [s for s in samples if any(p in s["task_id"] for p in prefixes)]
        counts = Counter((s["completion"].strip()[:160], s["verdict"]) for s in samples)
        rows += [[name, f"{n}/{len(samples)}", verdict, text] for (text, verdict), n in counts.most_common(top)]
    return rows


# ---- the page -----------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v if v is not None else "—"))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(path: Path, cfg, stages: dict, rlvr_runs: list[dict], evals: dict, learning: dict,
                 seconds: dict, eval_tasks: str | None = None) -> Path:
    out = path.parent
    eval_tasks = eval_tasks or cfg.eval.tasks
    tiers = learning["tiers"]
    scores = {}
    for name, ev in evals.items():
        easy = tier_scores(ev["summary"], tiers)
        scores[name] = {"all": ev["summary"].get("pass@1"), "easy": easy["pass@1"],
                        "reward": ev["summary"].get("reward_mean"), "easy_reward": easy["reward_mean"]}
    rows = [[n, s["all"], s["easy"], s["reward"], s["easy_reward"], evals[n]["summary"]["tasks"],
             evals[n]["summary"]["samples"], evals[n]["summary"]["model"]] for n, s in scores.items()]
    revised = any("first_try" in ev["summary"] for ev in evals.values())
    if revised:  # eval.turns > 1: pass@1 (all) is after feedback; the first attempts' is shown beside it
        rows = [[r[0], evals[r[0]]["summary"].get("first_try", {}).get("pass@1"), *r[1:]] for r in rows]
    tier_label = "tier " + ",".join(map(str, tiers))
    seed_rows = [[s["seed"], learning["sft"]["pass@1"], s["pass@1"], learning["sft"]["reward_mean"], s["reward_mean"],
                  s["gain"], s["learner_eval_reward_first"], s["learner_eval_reward_last"]] for s in learning["seeds"]]
    verdict = "yes" if learning["improved_every_seed"] else "NO"
    start = {"sft": "SFT", "pretrain": "pretraining", "base": "the base model"}[learning.get("start", "sft")]
    plots = [plot_pretrain(read_metrics(out / "pretrain" / "metrics.jsonl")),
             plot_sft(read_metrics(out / "sft" / "metrics.jsonl")), plot_rewards(rlvr_runs), plot_pass(scores),
             plot_revision(evals), plot_verdicts(evals), plot_time(seconds)]
    links = "".join(f'<li><a href="{html.escape(str(Path(r["summary"]["report"]).relative_to(out)))}">RLVR seed '
                    f'{r["seed"]}: per-step report</a></li>' for r in rlvr_runs
                    if r["summary"].get("report") and Path(r["summary"]["report"]).is_relative_to(out))
    title = " → ".join(["pretrain" if "pretrain" in stages else "your model", *(["SFT"] if "sft" in stages else []),
                        "RLVR"])
    body = f"""<h1>Crucible pipeline: {title}</h1>
<p>{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} · output <code>{html.escape(str(out))}</code> ·
held-out tasks: <code>{html.escape(eval_tasks)}</code>, {cfg.eval.samples} samples per task at temperature
{cfg.eval.temperature}{f", up to {cfg.eval.turns} attempts with the sandbox's feedback" if cfg.eval.turns > 1 else ""},
the same seeds for every checkpoint.</p>
<h2>Held-out evaluation per stage</h2>
{_table([*(["checkpoint", "first-try pass@1 (all)", "after-feedback pass@1 (all)"] if revised else
           ["checkpoint", "pass@1 (all)"]), f"pass@1 ({tier_label})", "reward (all)", f"reward ({tier_label})",
         "tasks", "samples", "path"], rows)}
<h2>Did RLVR improve on {start}? ({tier_label}, {learning['metric']}, gain ≥ {learning['min_gain']}): {verdict}</h2>
{_table(["seed", f"{start} pass@1", "RLVR pass@1", f"{start} reward", "RLVR reward", f"gain ({learning['metric']})",
         "learner eval reward before", "learner eval reward after"], seed_rows)}
<h2>Plots</h2>
{"".join(f'<img class="{"wide" if i == 3 else ""}" src="data:image/png;base64,{p}">'
         for i, p in enumerate(plots) if p)}
<h2>What the models write: the most frequent held-out completions ({tier_label})</h2>
{_table(["checkpoint", "count", "verdict", "completion"], common_completions(out, list(evals), tiers))}
<h2>Stages</h2>
<ul>{links}</ul>
<pre>{html.escape(json.dumps({n: s["summary"] for n, s in stages.items()}, indent=1))}</pre>"""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Crucible pipeline report</title><style>
body{{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;font-size:90%}}
img{{max-width:49%;vertical-align:top}} img.wide{{max-width:98%}} pre{{font-size:75%;background:#f6f6f6;padding:1em;overflow:auto}}
</style></head><body>{body}</body></html>"""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(page)
    tmp.rename(path)
    return path
