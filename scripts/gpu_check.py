"""`make gpu-check`: the GPU paths of pretraining, SFT and the GRPO learner, run for real on one CUDA device in
one call (an NVIDIA H200 runs it in under 8 minutes). On a machine without CUDA every stage that needs it
reports "skipped: no CUDA" and the script exits 0, so CI dry-runs it and it cannot rot.

    python -m scripts.gpu_check prepare            # on the CPU machine: wheels, 0.5B tokenizer + shards, SFT data
    python -m scripts.gpu_check run [--out F]      # on the GPU machine (or a dry run on CPU)

Why a script and not only pytest: a GPU is lent for minutes, so every stage is time-boxed, runs in its own
process (a crash or a CUDA OOM costs one stage, not the run), and appends its JSON line to `--out` the moment
it ends; whatever finished before a time-out is kept. Stages use the real CLIs (`python -m pretrain`,
`python -m sft`) wherever one exists, so the check exercises what a user runs.

The test machine has torch, transformers, accelerate, peft and safetensors but no pydantic, TRL or datasets:
`prepare` downloads those wheels (cp312, manylinux x86_64) into `.gpu-check/wheels`, and `run` installs them
into a private directory first. The last stdout line is one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
PREPARED = REPO / ".gpu-check"  # git-ignored; travels to the GPU machine with the tree
PRETRAIN_PRESET = "configs/pretrain/dense-0.5b.yaml"
SFT_PRESET = "configs/sft/tiny-cpu.yaml"
TOTAL_BUDGET_S = 470.0  # the whole run, start-up included, stays under 8 minutes

# What the GPU machine lacks, pinned as in constraints.txt (pure-Python wheels except pydantic_core).
WHEELS = ("pydantic==2.14.3", "pydantic_core==2.50.4", "annotated-types==0.8.0", "typing-inspection==0.4.5",
          "trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19",
          "peft==0.21.2", "datasketch==1.6.5")

# The 0.5B preset cut to a 30-step throughput run: no sandbox on the GPU machine (compile eval off), a small
# validation BPB at the end (which runs the evals under the training autocast), no TensorBoard.
PRETRAIN_COMMON = ("train.steps=30", "train.log_every=10", "eval.every=30", "eval.val_windows=16",
                   "eval.fim_examples=4", "eval.compile_prompts=0", "checkpoint.every=1000", "checkpoint.at_end=false",
                   "tensorboard=false")
# A small dense model on the same tokenizer for the FSDP2 kill-and-resume and MoE stages.
SMALL_MODEL = ("model.hidden_size=512", "model.num_layers=4", "model.num_heads=8", "model.num_kv_heads=2",
               "model.head_dim=64", "model.intermediate_size=1536", "data.seq_len=1024", "data.micro_batch_size=4",
               "model.context=1024")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def last_json(text: str) -> dict:
    """The last line of a CLI's stdout that parses as a JSON object (every CLI here ends with one)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON summary line in the output")


class StageFailed(RuntimeError):
    pass


def run_cli(args: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run `python <args>` from the repo root; its JSON summary, or StageFailed with the stderr tail."""
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise StageFailed(f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2500:]}")
    return last_json(proc.stdout)


def link_pretrain_data(out_dir: Path, with_tokenizer: bool = True) -> None:
    """A stage's pretrain out_dir reuses the prepared tokenizer and shards (no corpus/BPE work on the GPU)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = PREPARED / "pretrain"
    for name in ("shards", "tokenizer") if with_tokenizer else ("shards",):
        if not (src / name).exists():
            raise StageFailed(f"{src / name} missing: run `make gpu-check-prepare` on the CPU machine first")
        link = out_dir / name
        if not link.exists():
            link.symlink_to(src / name)


def pretrain_args(out_dir: Path, *extra: str) -> list[str]:
    return ["-m", "pretrain", "train", "--config", PRETRAIN_PRESET, f"out_dir={out_dir}", *PRETRAIN_COMMON, *extra]


def perf(summary: dict) -> dict:
    keys = ("tokens_per_s", "tokens_per_s_per_device", "mfu", "peak_memory_gib", "val_bpb", "train_loss_ema",
            "steps", "step_seconds", "attn_implementation", "isolation", "compile_graph_breaks", "grad_checkpointing",
            "params", "mfu_peak_source", "alerts")
    return {k: summary[k] for k in keys if k in summary}


# The command lines of the CLI stages, shared by the stages and by the dry run that validates their configs.
def sdpa_args(out: Path) -> list[str]:
    return pretrain_args(out, "model.attn_implementation=sdpa")


def compile_args(out: Path) -> list[str]:
    return pretrain_args(out, "train.compile=true")


def fsdp2_args(out: Path) -> list[str]:
    # bit-exactness needs deterministic kernels: eager attention (SDPA's and flex's backward accumulate with
    # atomics, so a rerun need not be bit-identical) and torch's deterministic algorithms
    return pretrain_args(out, *SMALL_MODEL, "train.parallel=fsdp2", "train.steps=12", "checkpoint.every=6",
                         "checkpoint.at_end=true", "eval.every=12", "train.log_every=1", "eval.fim_examples=0",
                         "model.attn_implementation=eager", "train.deterministic=true")


def from_checkpoint_args(out: Path, checkpoint: Path) -> list[str]:
    return pretrain_args(out, f"init.from_checkpoint={checkpoint}", "train.steps=5", "eval.every=5",
                         "eval.fim_examples=0", "train.activation_checkpointing=true")


def moe_args(out: Path) -> list[str]:
    moe = "{num_experts: 8, experts_per_token: 2, num_shared_experts: 1, expert_intermediate_size: 512}"
    return pretrain_args(out, *SMALL_MODEL, "model.arch=moe", f"model.moe={moe}", "train.parallel=fsdp2",
                         "train.steps=6", "eval.every=6", "eval.fim_examples=0", "model.attn_implementation=sdpa")


def sft_args(out: Path, checkpoint: Path) -> list[str]:
    return ["-m", "sft", "train", "--config", SFT_PRESET, f"out_dir={out}", f"model.name_or_path={checkpoint}",
            "model.chat_template=builtin", "train.method=lora", "train.max_steps=10", "train.bf16=true",
            "eval.every=10", "eval.max_samples=16", "checkpoint.every=10", "logging.every=5", "train.lr=1e-4"]


def planned_commands(work: Path) -> dict[str, list[list[str]]]:
    ckpt = work / "pretrain-flex" / "final"
    return {"pretrain_sdpa": [sdpa_args(work / "a")], "pretrain_flex": [pretrain_args(work / "b")],
            "pretrain_compile": [compile_args(work / "c")], "fsdp2_resume": [fsdp2_args(work / "d")],
            "from_checkpoint_ac": [from_checkpoint_args(work / "e", ckpt)], "moe": [moe_args(work / "f")],
            "sft_lora": [sft_args(work / "g", ckpt)]}


def validate_command(args: list[str]) -> None:
    """Load the config a CLI command would run with (preset + overrides), without running it: a dry run on a
    machine without CUDA still fails when a preset or an override no longer matches the config schema."""
    from configs.loader import load_config

    module, config = args[1], args[args.index("--config") + 1]
    overrides = [a for a in args[args.index("--config") + 2:] if "=" in a]
    if module == "pretrain":
        from pretrain.config import PretrainConfig as cls
    else:
        from sft.config import SFTConfig as cls
    load_config(cls, REPO / config, overrides)


# -- stages -------------------------------------------------------------------------------------------------
def stage_env(ctx: "Context", timeout: float) -> dict:
    """What the machine has, and that every package the stages import is importable."""
    import importlib

    import torch

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "device_count": torch.cuda.device_count()}
    missing = {}
    for name in ("transformers", "accelerate", "peft", "safetensors", "tokenizers", "pydantic", "trl", "datasets",
                 "yaml", "pretrain.train", "sft.train", "learner.worker"):
        try:
            mod = importlib.import_module(name)
            if "." not in name:
                out[name] = getattr(mod, "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the stages that need it fail later
            missing[name] = f"{type(exc).__name__}: {exc}"[:300]
    if missing:
        out["import_errors"] = missing
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out.update(gpu_memory_gib=round(total / 2**30, 1), bf16_supported=torch.cuda.is_bf16_supported())
    return out


def run_pretrain(ctx: "Context", name: str, make_args: Callable[[Path], list[str]], timeout: float) -> dict:
    """`python -m pretrain` in `<work>/<name>` on the prepared tokenizer and shards; its JSON summary."""
    out = ctx.work / name
    link_pretrain_data(out)
    return run_cli(make_args(out), timeout)


def stage_pretrain_sdpa(ctx: "Context", timeout: float) -> dict:
    """0.5B dense, 30 steps bf16, SDPA (document mask materialised from the packed position ids)."""
    return perf(run_pretrain(ctx, "pretrain-sdpa", sdpa_args, timeout))


def stage_pretrain_flex(ctx: "Context", timeout: float) -> dict:
    """The same run with the preset's document-isolating attention (flex_attention's block-causal mask)."""
    summary = run_pretrain(ctx, "pretrain-flex", pretrain_args, timeout)
    ctx.checkpoint_05b = Path(summary["checkpoint"])
    return perf(summary)


def stage_pretrain_compile(ctx: "Context", timeout: float) -> dict:
    """torch.compile of every decoder layer: speed-up over the eager run of the same preset, graph breaks."""
    result = perf(run_pretrain(ctx, "pretrain-compile", compile_args, timeout))
    eager = ctx.results.get("pretrain_flex", {}).get("tokens_per_s")
    if eager and result.get("tokens_per_s"):
        result["speedup_vs_eager"] = round(result["tokens_per_s"] / eager, 3)
    return result


def stage_fsdp2_resume(ctx: "Context", timeout: float) -> dict:
    """FSDP2 on one rank (NCCL): a run killed with SIGKILL after its step-6 checkpoint and resumed must log the
    same losses for steps 7..12 as an uninterrupted run."""
    deadline = time.monotonic() + timeout
    straight, killed = ctx.work / "fsdp2-straight", ctx.work / "fsdp2-killed"
    for d in (straight, killed):
        link_pretrain_data(d)
    a = run_cli(fsdp2_args(straight), deadline - time.monotonic())
    proc = subprocess.Popen([sys.executable, *fsdp2_args(killed)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marker = killed / "checkpoints" / "step-0000006"
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not marker.exists():
        raise StageFailed("the run to be killed never wrote its step-6 checkpoint")
    b = run_cli(fsdp2_args(killed), deadline - time.monotonic())

    def losses(d: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}

    la, lb = losses(straight), losses(killed)
    after = [s for s in range(7, 13)]
    same = all(s in la and s in lb and la[s] == lb[s] for s in after)
    if not same or not b.get("resumed_from"):
        raise StageFailed(f"resume is not exact: straight {[la.get(s) for s in after]} vs resumed "
                          f"{[lb.get(s) for s in after]} (resumed_from={b.get('resumed_from')})")
    return {"resumed_from": Path(b["resumed_from"]).name, "losses_7_12": [la[s] for s in after],
            "exact": True, **{f"straight_{k}": v for k, v in perf(a).items() if k in ("tokens_per_s", "mfu")}}


def stage_from_checkpoint_ac(ctx: "Context", timeout: float) -> dict:
    """Continued pretraining from the 0.5B export with activation checkpointing: the model must train (not
    eval mode), checkpoint its layers, and peak memory must fall below the run without it."""
    if ctx.checkpoint_05b is None or not ctx.checkpoint_05b.exists():
        raise StageFailed("no 0.5B checkpoint: the pretrain_flex stage did not finish")
    out = ctx.work / "from-checkpoint-ac"
    link_pretrain_data(out, with_tokenizer=False)
    summary = run_cli(from_checkpoint_args(out, ctx.checkpoint_05b), timeout)
    result = perf(summary)
    without = ctx.results.get("pretrain_flex", {}).get("peak_memory_gib")
    if without and result.get("peak_memory_gib"):
        result["peak_memory_gib_without_ac"] = without
        if result["peak_memory_gib"] >= without:
            raise StageFailed(f"activation checkpointing did not lower peak memory: {result}")
    if not result.get("grad_checkpointing"):
        raise StageFailed(f"activation checkpointing inactive when starting from a checkpoint: {result}")
    return result


def stage_moe(ctx: "Context", timeout: float) -> dict:
    """A GLM-4-MoE step under FSDP2 on NCCL: router loads are counted and all-reduced on the GPU."""
    return perf(run_pretrain(ctx, "moe", moe_args, timeout))


def stage_sft_lora(ctx: "Context", timeout: float) -> dict:
    """One short LoRA SFT run through `python -m sft` on the 0.5B export (bf16 base, packing probe on the GPU)."""
    if ctx.checkpoint_05b is None or not ctx.checkpoint_05b.exists():
        raise StageFailed("no 0.5B checkpoint: the pretrain_flex stage did not finish")
    out = ctx.work / "sft-lora"
    data = PREPARED / "sft" / "data"
    if not data.exists():
        raise StageFailed(f"{data} missing: run `make gpu-check-prepare` first")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data").exists():
        shutil.copytree(data, out / "data")
    summary = run_cli(sft_args(out, ctx.checkpoint_05b), timeout)
    return {k: summary.get(k) for k in ("steps", "train_loss", "eval_loss_first", "eval_loss_last", "tokens_per_s",
                                         "seconds", "checkpoint")}


def stage_grpo_update(ctx: "Context", timeout: float) -> dict:
    """GRPO updates on the GPU as the RLVR recipe runs them (issue 16): policy and KL reference of the 0.5B export,
    bf16 compute over fp32 master weights at lr 5e-7, temperature 0.8, completion-only chunked log-probs,
    activation checkpointing; then the weight source streams the policy in bf16 buckets (to a counting sink:
    the GPU machine has no vLLM). Reports tokens/s, peak memory, the fraction of weights the updates changed."""
    if ctx.checkpoint_05b is None or not ctx.checkpoint_05b.exists():
        raise StageFailed("no 0.5B checkpoint: the pretrain_flex stage did not finish")
    return run_cli(["-m", "scripts.gpu_check", "grpo-worker", str(ctx.checkpoint_05b)], timeout)


class _CountingSink:
    """Stands in for the transfer group: `send` broadcasts each bucket into it; it counts what arrives."""

    def __init__(self) -> None:
        self.buckets = self.bytes = self.largest = 0

    def broadcast(self, bucket, root: int):
        self.buckets += 1
        self.bytes += bucket.numel()
        self.largest = max(self.largest, bucket.numel())
        return self

    def wait(self) -> None:
        pass


def grpo_worker(model_path: str, groups: int = 4, prompt_len: int = 128, completion_len: int = 256,
                steps: int = 3, bucket_mb: float = 64) -> dict:
    """In-process body of stage_grpo_update (run as its own process; also runs on CPU, smaller, in the tests)."""
    import random

    import torch

    from learner.config import RLVRConfig
    from learner.worker import LearnerWorker
    from rollout.types import TrainingSample
    from rollout.weight_transfer import send

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = RLVRConfig(model={"dtype": "bfloat16"}, rollout={"temperature": 0.8},
                     algo={"lr": 5e-7, "micro_batch_size": 4, "kl_coef": 0.01},
                     learner={"gpus_per_worker": 1 if cuda else 0, "activation_checkpointing": True})
    worker = LearnerWorker(cfg, model_path, rank=0, world_size=1, master_port=0)
    before = {n: p.detach().clone() for n, p in worker.model.named_parameters()}
    rng = random.Random(0)
    vocab = worker.model.config.vocab_size
    samples = []
    for g in range(groups):  # groups of 4 completions after a shared prompt
        prompt = [rng.randrange(vocab) for _ in range(prompt_len)]
        for k in range(4):
            comp = [rng.randrange(vocab) for _ in range(completion_len)]
            samples.append(TrainingSample(tuple(prompt), tuple(comp), (-10.0,) * completion_len, (-1.0) ** k))
    tokens = sum(len(s.completion_ids) for s in samples)
    times, metrics = [], {}
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        metrics = worker.train([samples], [tokens], [len(samples) // 4])
        sync()
        times.append(time.perf_counter() - t0)
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in worker.model.named_parameters())
    total = sum(p.numel() for p in before.values())
    # the weight source: every parameter in bf16, packed into buckets smaller than the largest tensor
    layout = worker.weight_layout(int(bucket_mb * 2**20))
    sink = _CountingSink()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    send(sink, worker._named_weights_in_wire_dtype(), layout, worker.device)
    sync()
    stream_s = time.perf_counter() - t0
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "steps": steps,
              "seconds_per_step": round(min(times[1:] or times), 3),
              "train_tokens_per_s": round(tokens / min(times[1:] or times), 1),
              "peak_memory_gib": round(metrics["mem_peak_gb"], 2), "loss": metrics["loss"], "kl": metrics["kl_sum"] / max(metrics["tokens"], 1.0),
              "fraction_weights_changed": round(changed / total, 4),
              "master_dtypes": sorted({str(p.dtype) for p in worker.model.parameters()}),
              "stream_buckets": sink.buckets, "stream_mb": round(sink.bytes / 2**20, 1),
              "stream_s": round(stream_s, 3), "largest_tensor_mb": round(max(p.nbytes for p in layout.params) / 2**20, 1),
              "stream_extra_peak_mib": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1) if cuda else None}
    if sink.bytes != layout.total_bytes:
        raise StageFailed(f"the weight source sent {sink.bytes} of {layout.total_bytes} bytes: {result}")
    if changed / total < 0.9:
        raise StageFailed(f"lr 5e-7 with fp32 masters changed under 90 % of the weights: {result}")
    return result


def stage_pytest_gpu(ctx: "Context", timeout: float) -> dict:
    """tests/gpu: the bug classes of issue 17 pinned on a real CUDA device (collectives on NCCL, isolation probe
    per attention implementation with batch > 1, training mode and checkpointing from a checkpoint, fp32 masters
    under bf16 compute)."""
    junit = ctx.work / "pytest-gpu.xml"
    # --show-capture=no: torch's debug logging would fill the report; the assertion lines are what matter
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/gpu", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", "-o", "addopts=-ra", "--tb=short", "--show-capture=no",
                           "-W", "ignore::DeprecationWarning"], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    tail = lines[-1] if lines else ""
    if proc.returncode != 0:
        why = [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "E "))][:60]
        raise StageFailed(f"pytest exit {proc.returncode}: {tail}\n" + "\n".join(why))
    return {"pytest": tail}


@dataclass
class Stage:
    name: str
    run: Callable[["Context", float], dict]
    timeout_s: float
    needs_cuda: bool = True


# In order of what matters most if time runs out; the compile stage is the most expensive and runs last.
STAGES = [
    Stage("env", stage_env, 60, needs_cuda=False),
    Stage("pretrain_sdpa", stage_pretrain_sdpa, 110),
    Stage("pretrain_flex", stage_pretrain_flex, 110),
    Stage("fsdp2_resume", stage_fsdp2_resume, 120),
    Stage("from_checkpoint_ac", stage_from_checkpoint_ac, 90),
    Stage("moe", stage_moe, 70),
    Stage("sft_lora", stage_sft_lora, 90),
    Stage("grpo_update", stage_grpo_update, 70),
    Stage("pytest_gpu", stage_pytest_gpu, 120),
    Stage("pretrain_compile", stage_pretrain_compile, 150),
]


@dataclass
class Context:
    work: Path
    results: dict
    checkpoint_05b: Path | None = None


def run_stages(out: Path, work: Path, only: list[str] | None, budget_s: float) -> dict:
    start = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(work, {})
    has_cuda = cuda_available()
    statuses = {}
    for stage in STAGES:
        if only and stage.name not in only:
            continue
        left = budget_s - (time.monotonic() - start)
        row: dict = {"stage": stage.name}
        t0 = time.monotonic()
        if stage.needs_cuda and not has_cuda:
            row["status"] = "skipped: no CUDA"
            try:  # what can be checked without a GPU: the configs the stage's commands would load
                for args in planned_commands(work).get(stage.name, []):
                    validate_command(args)
            except Exception as exc:  # noqa: BLE001
                row.update(status="failed", error=f"config: {type(exc).__name__}: {exc}"[-3000:])
        elif left < 20:
            row["status"] = f"skipped: the {budget_s:.0f} s budget is spent"
        else:
            try:
                row.update(stage.run(ctx, min(stage.timeout_s, left)))
                row["status"] = "ok"
                ctx.results[stage.name] = row
            except subprocess.TimeoutExpired:
                row["status"] = f"timeout after {min(stage.timeout_s, left):.0f} s"
            except Exception as exc:  # noqa: BLE001 - one stage's failure is its line, the run goes on
                row["status"] = "failed"
                row["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
        row["seconds"] = round(time.monotonic() - t0, 1)
        with open(out, "a") as fh:  # appended the moment the stage ends: a later time-out keeps it
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)
        statuses[stage.name] = row["status"]
    failed = [n for n, s in statuses.items() if s != "ok" and not s.startswith("skipped: no CUDA")]
    return {"out": str(out), "cuda": has_cuda, "stages": statuses, "failed": failed,
            "seconds": round(time.monotonic() - start, 1)}


def prepare(skip_wheels: bool = False) -> dict:
    """On the CPU machine: what the GPU machine cannot build or download itself."""
    PREPARED.mkdir(exist_ok=True)
    summary: dict = {"dir": str(PREPARED)}
    wheels = PREPARED / "wheels"
    if not skip_wheels and not wheels.exists():
        tmp = wheels.with_name("wheels.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28, 34)]
        platforms.append("--platform=manylinux2014_x86_64")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(tmp), *WHEELS],
                       check=True)
        tmp.rename(wheels)
    summary["wheels"] = sorted(p.name for p in wheels.glob("*.whl")) if wheels.exists() else []
    pre = PREPARED / "pretrain"
    if not (pre / "shards" / "val" / "meta.json").exists():
        run_cli(["-m", "pretrain", "shards", "--config", PRETRAIN_PRESET, f"out_dir={pre}"], 1800)
    sft = PREPARED / "sft"
    if not (sft / "data" / "stats.json").exists():
        run_cli(["-m", "sft", "data", "--config", SFT_PRESET, f"out_dir={sft}"], 900)
    shutil.rmtree(pre / "corpus", ignore_errors=True)  # the shards hold the text; the corpus need not travel
    size = sum(p.stat().st_size for p in PREPARED.rglob("*") if p.is_file())
    summary["mib"] = round(size / 2**20, 1)
    return summary


def install_wheels() -> None:
    """On the GPU machine: the carried wheels into a private site dir placed first on sys.path (and on
    PYTHONPATH for the stage processes)."""
    wheels = sorted((PREPARED / "wheels").glob("*.whl"))
    if not wheels:
        return
    import hashlib

    key = hashlib.sha256("".join(w.name for w in wheels).encode()).hexdigest()[:12]
    site = Path(os.environ.get("GPU_CHECK_SITE", f"/tmp/gpu-check-site-{key}"))  # new wheels: a new dir
    if not site.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *map(str, wheels)], check=True)
    paths = [str(site), str(REPO)]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + inherited)
    for p in reversed(paths):
        sys.path.insert(0, p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the stages (CUDA stages skip without a GPU)")
    run.add_argument("--out", default="runs/gpu-check/results.jsonl", help="JSONL: one line per stage")
    run.add_argument("--work", default="runs/gpu-check/work")
    run.add_argument("--only", nargs="*", help="run only these stages")
    run.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds for the whole run")
    run.add_argument("--install-wheels", action="store_true", help="install .gpu-check/wheels first")
    prep = sub.add_parser("prepare", help="build .gpu-check/ on the CPU machine")
    prep.add_argument("--skip-wheels", action="store_true")
    worker = sub.add_parser("grpo-worker")
    worker.add_argument("model")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        summary = prepare(args.skip_wheels)
    elif args.command == "grpo-worker":
        summary = grpo_worker(args.model)
    else:
        if args.install_wheels and cuda_available():  # cp312 wheels for the GPU machine; a dry run needs none
            install_wheels()
        out = Path(args.out)
        out.unlink(missing_ok=True)
        summary = run_stages(out, Path(args.work), args.only, args.budget)
    print(json.dumps(summary))
    return 1 if summary.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
