"""A one-file HTML report of an RLVR run, built from the `metrics.jsonl` that `MetricsSink` writes.

The page needs no server and no network: plots are PNGs (matplotlib, Agg) embedded as base64, so the file
can be attached to an issue or copied off a cluster as is. Every series is optional: a key the run did
not log is left out, a panel with no series at all is dropped, and a run with no steps yet gets a page
saying so.

    python -m learner.report runs/x/metrics.jsonl runs/x/report.html   # last line: {"report": "..."}
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from learner.metrics import flatten_scalars, read_metrics

REWARD_COMPONENTS = ("reward_compile_mean", "reward_warnings_mean", "reward_tests_mean", "reward_reasoning_mean")
PHASES = ("time_generate_s", "time_score_s", "time_train_s", "time_sync_s")
HEALTH = ("kl", "entropy", "clip_fraction", "logprob_mismatch", "staleness")


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) where `key` holds a number; steps without it (None, missing) are left out."""
    points = [(r["step"], float(r[key])) for r in records
              if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [s for s, _ in points], [v for _, v in points]


def _png(fig: Figure) -> str:
    # Figure + FigureCanvasAgg rather than pyplot: no global figure state, no GUI backend, thread-safe
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def integer_steps(ax) -> None:
    """Ticks on whole steps only: left to itself matplotlib labels a run of a few steps 0.25, 0.5, ..."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _new_axes(title: str, ylabel: str):
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel("step")
    integer_steps(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig: Figure, ax, drawn: bool) -> str | None:
    if not drawn:
        return None
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # outside: never hides data
    return _png(fig)


def plot_reward(records: list[dict]) -> str | None:
    fig, ax = _new_axes("Reward", "reward")
    steps, mean = _series(records, "reward_mean")
    if steps:
        ax.plot(steps, mean, color="C0", label="reward_mean")
        by_step = dict(zip(*_series(records, "reward_std")))
        band = [(s, m, by_step[s]) for s, m in zip(steps, mean) if s in by_step]
        if band:
            ax.fill_between([s for s, _, _ in band], [m - d for _, m, d in band], [m + d for _, m, d in band],
                            color="C0", alpha=0.2, label="± reward_std")
    # the components show which part of the reward moves (or is being gamed)
    drawn_parts = False
    for i, key in enumerate(REWARD_COMPONENTS):
        s, v = _series(records, key)
        if s:
            ax.plot(s, v, color=f"C{i + 2}", lw=1, ls="--", label=key)
            drawn_parts = True
    s, v = _series(records, "eval_reward_mean")
    if s:
        ax.plot(s, v, "o", color="C1", label="eval_reward_mean")
    return _finish(fig, ax, bool(steps or drawn_parts or s))


def plot_rates(records: list[dict]) -> str | None:
    fig, ax = _new_axes("Pass and compile rates", "fraction of samples")
    drawn = False
    # with rollout.turns > 1 pass_rate is the last attempt's; first_pass_rate the first try's, before feedback
    for key, style in (("pass_rate", "-"), ("first_pass_rate", ":"), ("compile_rate", "-"), ("eval_pass_rate", "o"),
                       ("eval_first_pass_rate", "x")):
        s, v = _series(records, key)
        if s:
            ax.plot(s, v, style, label=key)
            drawn = True
    ax.set_ylim(-0.02, 1.02)
    return _finish(fig, ax, drawn)


def _stacked_bars(ax, steps: list[int], stacks: dict[str, list[float]]) -> None:
    bottom = [0.0] * len(steps)
    for label, values in stacks.items():
        ax.bar(steps, values, bottom=bottom, width=0.8, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]


def plot_verdicts(records: list[dict]) -> str | None:
    fig, ax = _new_axes("Verdict mix", "samples")
    rows = [r for r in records if isinstance(r.get("verdicts"), dict) and r["verdicts"]]
    names = sorted({k for r in rows for k in r["verdicts"]})
    stacks = {n: [float(r["verdicts"].get(n) or 0) for r in rows] for n in names}
    _stacked_bars(ax, [r["step"] for r in rows], stacks)
    return _finish(fig, ax, bool(rows))


def plot_phases(records: list[dict]) -> str | None:
    fig, ax = _new_axes("Step phase times", "seconds")
    present = [k for k in PHASES if _series(records, k)[0]]
    rows = [r for r in records if any(isinstance(r.get(k), (int, float)) for k in present)]
    _stacked_bars(ax, [r["step"] for r in rows], {k: [float(r.get(k) or 0) for r in rows] for k in present})
    s, v = _series(records, "time_step_s")
    if s:
        # the gap between the line and the bars is time no phase accounts for
        ax.plot(s, v, color="black", marker=".", label="time_step_s")
    return _finish(fig, ax, bool(rows or s))


def plot_health(records: list[dict]) -> str | None:
    present = [(k, *_series(records, k)) for k in HEALTH]
    present = [p for p in present if p[1]]
    if not present:
        return None
    # one small axis per metric: KL, entropy and staleness live on unrelated scales
    fig = Figure(figsize=(9, 1.8 * len(present) + 0.6), layout="constrained")
    axes = fig.subplots(len(present), 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle("Training health")
    for ax, (key, s, v) in zip(axes, present):
        ax.plot(s, v, marker="." if len(s) < 50 else None)
        ax.set_ylabel(key, fontsize="small")
        ax.grid(alpha=0.3)
        integer_steps(ax)
    axes[-1].set_xlabel("step")
    return _png(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def _table(rows: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in rows.items())
    return f"<table>{body}</table>"


def _flatten_summary(summary: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict) and value:
            out.update(_flatten_summary(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
img{max-width:100%;display:block;margin:1em 0}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px;vertical-align:top}
th{background:#f4f4f4}pre{margin:0;white-space:pre-wrap;max-width:420px}
.muted{color:#777}"""


def _excerpt(text: str, limit: int = 700) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def rollout_tables(rollouts_dir: Path, per_end: int = 3) -> list[str]:
    """For the first and last dumped steps: the best and worst samples by reward, with what the model wrote
    and why it scored so (rollout.dump writes these files)."""
    from rollout.dump import read_rollouts

    files = sorted(rollouts_dir.glob("step_*.jsonl.gz"))
    parts = []
    for path in dict.fromkeys([files[0], files[-1]] if files else []):
        rows = sorted(read_rollouts(path), key=lambda r: (r["reward"] is None, -(r["reward"] or 0.0)))
        if not rows:
            continue
        shown = rows if len(rows) <= 2 * per_end else rows[:per_end] + rows[-per_end:]
        head = "<tr><th>task</th><th>verdict</th><th>reward</th><th>advantage</th><th>completion</th><th>why</th></tr>"
        body = "".join(
            f"<tr><td>{html.escape(r['task_id'])}</td><td>{html.escape(r['verdict'])}</td>"
            f"<td>{html.escape(_fmt(r['reward']))}</td><td>{html.escape(_fmt(r['advantage']))}</td>"
            f"<td><pre>{html.escape(_excerpt(r['completion']))}</pre></td>"
            f"<td><pre>{html.escape(_excerpt(r['detail'] or r['diagnostics'], 400))}</pre></td></tr>" for r in shown)
        parts.append(f"<h2>Rollouts of step {rows[0]['step']}: best and worst</h2>"
                     f'<p class="muted">{html.escape(str(path))}</p><table>{head}{body}</table>')
    return parts


def render_html(records: list[dict], title: str, summary: dict | None, source: str,
                rollouts_dir: Path | None = None) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">{html.escape(source)} · generated '
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC · {len(records)} steps</p>"]
    if not records:
        parts.append("<p><b>No data yet</b>: the run has not logged a step.</p>")
    else:
        plots = [p(records) for p in (plot_reward, plot_rates, plot_verdicts, plot_phases, plot_health)]
        parts += [f'<img src="data:image/png;base64,{p}">' for p in plots if p is not None]
        last = records[-1]
        parts.append(f"<h2>Last step ({last['step']})</h2>")
        # the last record's numbers, verdicts flattened; None and strings shown as logged
        scalars = flatten_scalars({k: v for k, v in last.items() if k != "step"})
        others = {k: v for k, v in last.items() if k != "step" and not isinstance(v, dict) and k not in scalars}
        parts.append(_table({**scalars, **others}))
    if rollouts_dir is not None and rollouts_dir.is_dir():
        parts += rollout_tables(rollouts_dir)
    if summary:
        parts.append("<h2>Summary</h2>")
        parts.append(_table(_flatten_summary(summary)))
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(metrics_jsonl: str | Path, out_html: str | Path, title: str = "Crucible RLVR run",
                 summary: dict | None = None, rollouts_dir: str | Path | None = None) -> Path:
    records = read_metrics(metrics_jsonl)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    # write then rename: a browser refreshing the report never sees half a file
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render_html(records, title, summary, str(metrics_jsonl),
                                 Path(rollouts_dir) if rollouts_dir else None), encoding="utf-8")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="HTML report of an RLVR run's metrics.jsonl")
    parser.add_argument("metrics_jsonl")
    parser.add_argument("out_html")
    parser.add_argument("--title", default="Crucible RLVR run")
    args = parser.parse_args()
    print(json.dumps({"report": str(write_report(args.metrics_jsonl, args.out_html, args.title))}))
