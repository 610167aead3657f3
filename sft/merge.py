"""`merge`: a LoRA adapter folded into its base model, saved with the tokenizer as a plain HF checkpoint
(what vLLM, the RLVR learner and `compare` load). Written to `<out>.partial` and renamed when complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def adapter_base(adapter: Path) -> str:
    config = adapter / "adapter_config.json"
    if not config.exists():
        raise FileNotFoundError(f"{adapter}: not a LoRA adapter (no adapter_config.json)")
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config}: base_model_name_or_path is empty; pass --base")
    return base


def merge_adapter(adapter: Path, out: Path, base: str | None = None) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    base = base or adapter_base(adapter)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").exists() else base
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
