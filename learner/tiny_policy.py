"""The embedded default policy: a tiny Qwen2 model and a byte-level BPE tokenizer, built locally.

Nothing is downloaded. The tokenizer is trained on the embedded tasks' C++ and the model, randomly initialised
from config, is warmed up with a few hundred next-token steps on the training split's reference solutions, so
`configs/rlvr/tiny-cpu.yaml` used on its own (`model.path: tiny`; `make demo` uses the SFT stage's model instead)
starts from a policy that sometimes compiles (a random model never does, and GRPO on all-equal
rewards has nothing to learn from). The result is a normal Hugging Face checkpoint that vLLM, PEFT and TRL load;
it is cached under a key of its recipe, so tests and the demo build it once per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from configs.base import TaskSplit
from rewards.tasks import load_embedded

RECIPE = {
    "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 1024,
    "warmup_steps": 300, "lr": 3e-3, "batch_size": 16, "seed": 0, "heldout_fraction": 0.25, "version": 2,
}
EOS = "<|endoftext|>"


def default_cache_dir() -> Path:
    return Path(os.environ.get("CRUCIBLE_CACHE", Path.home() / ".cache" / "crucible"))


def recipe_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def recipe_split(recipe: dict) -> TaskSplit:
    """The split whose training tasks the policy is warmed up on (`split_seed` defaults to 0, the shared one)."""
    return TaskSplit(heldout_fraction=recipe["heldout_fraction"], seed=recipe.get("split_seed", 0))


def training_texts(split: TaskSplit) -> list[str]:
    """prompt + reference for every embedded task outside the held-out split (which the learning test uses)."""
    return [t.prompt + t.reference for t in load_embedded()
            if t.reference and not split.is_heldout(t.task_id)]


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=None)


def build_model(recipe: dict, vocab_size: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=recipe["hidden_size"], intermediate_size=recipe["intermediate_size"],
        num_hidden_layers=recipe["num_hidden_layers"], num_attention_heads=recipe["num_attention_heads"],
        num_key_value_heads=recipe["num_key_value_heads"], head_dim=recipe["head_dim"],
        max_position_embeddings=recipe["max_position_embeddings"], tie_word_embeddings=True,
        torch_dtype="float32", use_cache=True)
    return Qwen2ForCausalLM(config)


def warm_up(model, tokenizer, texts: list[str], recipe: dict) -> list[float]:
    """Plain next-token training on the reference programs; returns the loss curve."""
    gen = torch.Generator().manual_seed(recipe["seed"])
    seqs = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0.0)
    losses = []
    model.train()
    for _ in tqdm(range(recipe["warmup_steps"]), desc="warm-up tiny policy", file=None, leave=False):
        idx = torch.randint(len(seqs), (recipe["batch_size"],), generator=gen).tolist()
        batch = [seqs[i] for i in idx]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for row, s in enumerate(batch):
            ids[row, : len(s)] = torch.tensor(s)
            labels[row, : len(s)] = torch.tensor(s)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def build_tiny_policy(out_dir: str | Path | None = None, recipe: dict | None = None,
                      split: TaskSplit | None = None) -> Path:
    """Build (or reuse) the tiny policy, warmed up on `split`'s training tasks; returns its HF checkpoint
    directory. The default split keeps the cached policy's recipe (and cache key) as it was."""
    recipe = {**RECIPE, **(recipe or {})}
    if split is not None and split != recipe_split(recipe):
        recipe.update(heldout_fraction=split.heldout_fraction, split_seed=split.seed)
    out = Path(out_dir) if out_dir else default_cache_dir() / f"tiny-policy-{recipe_key(recipe)}"
    if (out / "crucible_recipe.json").exists():
        return out
    torch.manual_seed(recipe["seed"])
    texts = training_texts(recipe_split(recipe))
    tokenizer = build_tokenizer(texts, recipe["vocab_size"])
    model = build_model(recipe, len(tokenizer))
    losses = warm_up(model, tokenizer, texts, recipe)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "crucible_recipe.json").write_text(json.dumps({**recipe, "final_loss": losses[-1]}, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)  # atomic: concurrent builders race harmlessly
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
