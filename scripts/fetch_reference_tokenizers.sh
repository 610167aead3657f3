#!/usr/bin/env bash
# Fetch the vocab files of well-known reference tokenizers (GPT-2/Codex/GPT-4/GPT-4o, Qwen, StarCoder2,
# Llama 3, Llama 2, legacy Claude) from pinned npm and PyPI packages, for pretrain/reference_tokenizers.py.
#
#   scripts/fetch_reference_tokenizers.sh [CACHE_DIR]
#   default CACHE_DIR: ${CRUCIBLE_CACHE:-$HOME/.cache/crucible}/reference-tokenizers
#
# Only the needed files are kept, each checked against a pinned sha256 (the four OpenAI ones are tiktoken's
# own expected hashes). Idempotent: a package whose files are all present and intact is not fetched again.
# Optional feature: if npm/pip or the registry is unavailable it says so and still exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."

cache="${1:-${CRUCIBLE_CACHE:-$HOME/.cache/crucible}/reference-tokenizers}"
log() { echo "[reference-tokenizers] $*" >&2; }
if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=${PYTHON:-python3}; fi

# source | file inside the package | destination under $cache | sha256
manifest='
npm:gpt-tokenizer@4.0.0|package/data/r50k_base.tiktoken|gpt-tokenizer/r50k_base.tiktoken|306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930
npm:gpt-tokenizer@4.0.0|package/data/p50k_base.tiktoken|gpt-tokenizer/p50k_base.tiktoken|94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069
npm:gpt-tokenizer@4.0.0|package/data/cl100k_base.tiktoken|gpt-tokenizer/cl100k_base.tiktoken|223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7
npm:gpt-tokenizer@4.0.0|package/data/o200k_base.tiktoken|gpt-tokenizer/o200k_base.tiktoken|446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d
npm:gpt-tokenizer@4.0.0|package/LICENSE|gpt-tokenizer/LICENSE|-
npm:@anthropic-ai/tokenizer@0.0.4|package/claude.json|anthropic-tokenizer/claude.json|58dad83d85e9cd57be209172449ebfbc395df2b455c11fe8b7e5b661e6f462ad
npm:@anthropic-ai/tokenizer@0.0.4|package/LICENSE|anthropic-tokenizer/LICENSE|-
wheel:dashscope==2.0.2|dashscope/resources/qwen.tiktoken|dashscope/qwen.tiktoken|b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-starcoder.gguf|llama.cpp/ggml-vocab-starcoder.gguf|fedb892b4e1bd3c1f2fcdae356440b14fb458f4264d586e5c987ed93df4e174d
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf|llama.cpp/ggml-vocab-llama-bpe.gguf|97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf|llama.cpp/ggml-vocab-llama-spm.gguf|16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-starcoder.gguf.inp|llama.cpp/ggml-vocab-starcoder.gguf.inp|be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-starcoder.gguf.out|llama.cpp/ggml-vocab-starcoder.gguf.out|3ef12183c57ad076f9defd8e5eb454f509f5f0865cad35646abb4c4b2d2c5764
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf.inp|llama.cpp/ggml-vocab-llama-bpe.gguf.inp|be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf.out|llama.cpp/ggml-vocab-llama-bpe.gguf.out|118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf.inp|llama.cpp/ggml-vocab-llama-spm.gguf.inp|be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf.out|llama.cpp/ggml-vocab-llama-spm.gguf.out|ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.inp|llama.cpp/ggml-vocab-qwen2.gguf.inp|be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.out|llama.cpp/ggml-vocab-qwen2.gguf.out|de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf.inp|llama.cpp/ggml-vocab-gpt-2.gguf.inp|be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf.out|llama.cpp/ggml-vocab-gpt-2.gguf.out|48e8c4cb3ad5c37915b225f872222567c1c4dd4d66951aa53460c8d152ff6d60
sdist:llama-cpp-python==0.3.36|llama_cpp_python-0.3.36/LICENSE.md|llama.cpp/LICENSE-llama-cpp-python.md|-
'

intact() {  # intact DEST SHA256: the file is there (and matches, unless the hash is "-")
  [ -s "$1" ] || return 1
  [ "$2" = - ] || [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# download SOURCE DIR: puts the package archive into DIR; prints its path
download() {
  local kind=${1%%:*} spec=${1#*:} dir=$2
  case $kind in
    npm)
      command -v npm >/dev/null || { log "npm not installed (apt-get install npm): skipping $spec"; return 1; }
      (cd "$dir" && timeout 300 npm pack --loglevel=error --fetch-retries=1 --fetch-timeout=30000 "$spec" \
        >"$dir/npm.log" 2>&1) || { log "npm pack $spec failed (registry unreachable?): $(grep -m1 -i error "$dir/npm.log")"; return 1; }
      find "$dir" -maxdepth 1 -name '*.tgz' | head -n1 ;;
    wheel|sdist)
      local only=(--only-binary :all:)
      [ "$kind" = sdist ] && only=(--no-binary :all:)  # an sdist download also prepares its metadata
      timeout 600 "$python" -m pip download -q --no-deps "${only[@]}" --retries 1 --timeout 30 -d "$dir" "$spec" \
        >"$dir/pip.log" 2>&1 || { log "pip download $spec failed (registry unreachable?): $(grep -v 'is ignored' "$dir/pip.log" | tail -n1)"; return 1; }
      find "$dir" -maxdepth 1 \( -name '*.whl' -o -name '*.tar.gz' \) | head -n1 ;;
  esac
}

mkdir -p "$cache" || { log "cannot create $cache"; exit 0; }
work=$(mktemp -d) || exit 0
trap 'rm -rf "$work"' EXIT

for src in $(printf '%s\n' "$manifest" | cut -d'|' -f1 | sort -u); do
  [ -n "$src" ] || continue
  rows=$(printf '%s\n' "$manifest" | grep -F "$src|")
  missing=0
  while IFS='|' read -r _ _ dest sha; do intact "$cache/$dest" "$sha" || missing=1; done <<<"$rows"
  if [ $missing = 0 ]; then log "${src#*:}: present"; continue; fi

  dir="$work/$(echo "$src" | tr -c 'A-Za-z0-9.\n' _)"
  mkdir -p "$dir/x"
  log "${src#*:}: fetching"
  archive=$(download "$src" "$dir") || continue
  members=$(printf '%s\n' "$rows" | cut -d'|' -f2)
  case $archive in
    *.whl) "$python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], sys.argv[3:])' \
             "$archive" "$dir/x" $members ;;
    *) tar -xzf "$archive" -C "$dir/x" $members ;;
  esac || { log "${src#*:}: could not extract the expected files (package layout changed?)"; continue; }
  while IFS='|' read -r _ member dest sha; do
    if ! intact "$dir/x/$member" "$sha"; then log "${src#*:}: $member missing or sha256 mismatch: skipped"; continue; fi
    mkdir -p "$(dirname "$cache/$dest")"
    cp "$dir/x/$member" "$cache/$dest.part" && mv -f "$cache/$dest.part" "$cache/$dest"
  done <<<"$rows"
done

files=$(cd "$cache" && find . -type f ! -name '*.part' | sort | sed 's#^\./#  #')
if [ -n "$files" ]; then log "in $cache:"; echo "$files" >&2
else log "nothing in $cache: reference-tokenizer comparisons will be skipped"; fi
exit 0
