"""The SFT record: one instruction/input/output sample with its source file, and its two output formats
(Alpaca: instruction/input/output; chat: a list of role/content messages)."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("file", "granular", "qa", "bugfix", "task", "repair")


@dataclass(frozen=True)
class Sample:
    """`source_file` decides the train/eval side (all samples of one file land on the same side)."""
    kind: str
    instruction: str
    input: str
    output: str
    source_file: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def key(self) -> tuple[str, str, str]:
        """What exact deduplication compares."""
        return (self.instruction, self.input, self.output)

    def prompt(self) -> str:
        """The user turn: the instruction, then the input (when there is one) after a blank line."""
        return self.instruction + ("\n\n" + self.input if self.input else "")

    def to_alpaca(self) -> dict:
        return {"instruction": self.instruction, "input": self.input, "output": self.output,
                "kind": self.kind, "source_file": self.source_file}

    def to_chat(self, system: str | None = None) -> dict:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": self.prompt()},
                     {"role": "assistant", "content": self.output}]
        return {"messages": messages, "kind": self.kind, "source_file": self.source_file}
