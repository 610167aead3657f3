"""Fill-in-the-middle and packing: I/O-free, so they are tested against hand-built examples.

FIM follows Bavarian et al. 2022 ("Efficient Training of Language Models to Fill in the Middle"): a document is
split at two character positions into prefix/middle/suffix, each piece tokenised on its own, and emitted as
  PSM: <PRE> prefix <SUF> suffix <MID> middle <EOS>
  SPM: <PRE> <SUF> suffix <MID> prefix middle <EOS>      (the paper's SPM variant, as in SantaCoder/StarCoder)
so in both modes the model learns to write the middle after <MID> and to end it with EOS.

Packing joins documents (each followed by EOS) into fixed windows with no padding and no cropping: a document
that reaches the window's edge continues at the start of the next window. FIM is decided per whole document
once the packer knows where the document will land, and is never applied to a fragment cut at the edge: a FIM
document that does not fit in the space left waits (in `pending`) for the next window while plain documents
fill the gap, so no token is wasted and the FIM rate stays close to the configured one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

IGNORE = -100


@dataclass(frozen=True)
class FimSpecials:
    eos: int
    prefix: int
    middle: int
    suffix: int


def fim_split(text: str, rng: random.Random) -> tuple[str, str, str]:
    """Prefix, middle, suffix at two uniformly drawn character positions (the middle may be empty)."""
    i, j = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    return text[:i], text[i:j], text[j:]


def fim_sequence(prefix: list[int], middle: list[int], suffix: list[int], sp: FimSpecials, spm: bool) -> list[int]:
    if spm:
        return [sp.prefix, sp.suffix, *suffix, sp.middle, *prefix, *middle, sp.eos]
    return [sp.prefix, *prefix, sp.suffix, *suffix, sp.middle, *middle, sp.eos]


def positions_and_labels(tokens: list[int], segment_starts: list[int]) -> tuple[list[int], list[int]]:
    """Position ids restart at every segment; a token's label is the next token of the same segment.

    The last token of a segment gets no label: predicting the next document from this one is noise, and with
    attention kept inside documents the model could not see it anyway.
    """
    starts = set(segment_starts)
    positions, labels, pos = [], [], 0
    for t in range(len(tokens)):
        pos = 0 if t in starts else pos + 1
        positions.append(pos)
        last = t + 1 == len(tokens) or (t + 1) in starts
        labels.append(IGNORE if last else tokens[t + 1])
    return positions, labels


@dataclass
class Window:
    tokens: list[int]
    segment_starts: list[int]
    num_fim: int = 0


@dataclass
class PackerStats:
    docs: int = 0
    fim_docs: int = 0
    fim_waited: int = 0   # FIM documents that waited for the next window instead of being cut
    fim_dropped: int = 0  # FIM draws that fell back to plain (too long for any window, or the queue was full)
    tokens: int = 0       # document tokens placed in windows
    windows: int = 0

    def packing_efficiency(self, window: int) -> float:
        """Share of window positions holding document tokens (the rest would be padding; nothing is cropped:
        a document cut at an edge continues in the next window)."""
        return self.tokens / max(1, self.windows * window)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Packer:
    """Fills windows of `window` tokens from `next_doc() -> (token_ids, text)`; FIM tokenises with `encode`.

    All state (carry-over fragment, waiting FIM documents, RNG, counters) is in `state_dict()` so a resumed
    run emits exactly the windows an uninterrupted one would.
    """

    window: int
    next_doc: Callable[[], tuple[list[int], str]]
    encode: Callable[[str], list[int]]
    specials: FimSpecials | None
    fim_rate: float = 0.5
    spm_rate: float = 0.5
    seed: int = 0
    max_pending: int = 4
    carry: list[int] = field(default_factory=list)
    pending: list[list[int]] = field(default_factory=list)
    stats: PackerStats = field(default_factory=PackerStats)

    def __post_init__(self) -> None:
        if self.fim_rate > 0 and self.specials is None:
            raise ValueError("fim_rate > 0 needs the FIM special token ids")
        self.rng = random.Random(self.seed)

    def next_window(self) -> Window:
        out: list[int] = []
        starts: list[int] = []
        num_fim = 0
        while len(out) < self.window:
            space = self.window - len(out)
            if self.pending and len(self.pending[0]) <= space:  # before the carry: it can be cut, FIM can't
                seg = self.pending.pop(0)
                num_fim += 1
            elif self.carry:
                seg, self.carry = self.carry, []
            else:
                plain, fim = self._draw()
                if fim is not None and len(fim) <= space:
                    seg, num_fim = fim, num_fim + 1
                elif fim is not None and len(self.pending) < self.max_pending:
                    self.pending.append(fim)
                    self.stats.fim_waited += 1
                    continue
                else:
                    self.stats.fim_dropped += fim is not None
                    seg = plain
            starts.append(len(out))
            out.extend(seg[:space])
            self.stats.tokens += len(seg[:space])
            self.carry = seg[space:]
        self.stats.fim_docs += num_fim
        self.stats.windows += 1
        return Window(out, starts, num_fim)

    def _draw(self) -> tuple[list[int], list[int] | None]:
        """The next document as plain tokens + EOS, and its FIM form when the FIM draw says so (and it fits)."""
        ids, text = self.next_doc()
        self.stats.docs += 1
        plain = [*ids, self.specials.eos] if self.specials else list(ids)
        if self.fim_rate <= 0 or self.rng.random() >= self.fim_rate:
            return plain, None
        spm = self.rng.random() < self.spm_rate
        prefix, middle, suffix = fim_split(text, self.rng)
        fim = fim_sequence(self.encode(prefix), self.encode(middle), self.encode(suffix), self.specials, spm)
        if len(fim) > self.window:
            self.stats.fim_dropped += 1
            return plain, None
        return plain, fim

    def state_dict(self) -> dict:
        return {"carry": list(self.carry), "pending": [list(p) for p in self.pending],
                "rng": self.rng.getstate(), "stats": self.stats.as_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.carry = list(state["carry"])
        self.pending = [list(p) for p in state["pending"]]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.stats = PackerStats(**state["stats"])
