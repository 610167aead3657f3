"""The programs the official harnesses compile, reproduced from their sources, as a reference to agree with.

Crucible never scores with these (one translation unit lets a completion rewrite the tests; see
rewards/harness.py). They are the baseline of the agreement suite (tests/integration/rewards/test_agreement.py,
bench/rewards_agreement.py) and of the speed benchmark: the official verdict is "compiles with the official
flags and exits 0".

- HumanEval-X (THUDM/CodeGeeX, codegeex/benchmark): generation stops once the text holds one more `}` than
  `{`; cleanup keeps the text up to its last `}`; evaluation compiles `missing includes + "\\n" + prompt +
  generation + "\\n" + test` with `g++ -std=c++11` (and `-lcrypto -lssl` for CPP/162).
- MultiPL-E (nuprl/MultiPL-E): completions are cut at the first stop token; the executor compiles
  `prompt + completion + "\\n" + tests` with `g++ -std=c++17`.
"""

from __future__ import annotations

from rewards.tasks import HUMANEVAL_X_INCLUDES


def humaneval_x_generation(text: str) -> str:
    """What CodeGeeX's generator and cleanup keep of a raw continuation."""
    for end in range(1, len(text) + 1):  # the generator's finish test, applied as the text grows
        prefix = text[:end]
        if prefix.count("{") + 1 == prefix.count("}"):
            text = prefix
            break
    return text[: text.rfind("}")] + "}" if "}" in text else text


def humaneval_x_program(row: dict, generation: str) -> str:
    setup = "".join(line + "\n" for line in HUMANEVAL_X_INCLUDES if line not in row["prompt"])
    return setup + "\n" + row["prompt"] + generation + "\n" + row["test"]


def humaneval_x_flags(row: dict) -> tuple[str, ...]:
    return ("-std=c++11", "-lcrypto", "-lssl") if "162" in row["task_id"] else ("-std=c++11",)


def multipl_e_completion(text: str, stop_tokens: list[str]) -> str:
    cut = min([i for i in (text.find(s) for s in stop_tokens) if i >= 0], default=len(text))
    return text[:cut]


def multipl_e_program(row: dict, completion: str) -> str:
    return row["prompt"] + completion + "\n" + row["tests"]


MULTIPL_E_FLAGS_OFFICIAL = ("-std=c++17",)
