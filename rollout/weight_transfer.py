"""Weight transfer without a hub: learner rank 0 streams the policy, one parameter at a time, in fixed-size byte
buckets over a collective group straight into every rollout engine's workers.

Why: the first design serialized the whole model into one safetensors `bytes` on the driver and passed it as an
argument of `LLM.collective_rpc`. msgspec cannot encode a message over 4 GiB (every model above ~1.07B parameters
in fp32), and below that the driver held about eight host copies and served engines one after another. Here the
driver only passes metadata (a `Layout`: names, dtypes, shapes); the bytes go learner -> engines by broadcast, and
no process ever holds more than one bucket plus the one parameter being gathered (FSDP2 `full_tensor()` or a
ZeRO-3 gather, done by every learner rank together, one parameter at a time).

The group is made per transfer, without `torch.distributed`'s global state (neither side's own default group is
touched): a `TCPStore` on learner rank 0's node, a port bound there, and `ProcessGroupGloo` on CPU or
`ProcessGroupNCCL` on GPUs, rank 0 the learner and ranks 1.. the engines' workers. A fresh group per transfer is
what lets a replaced engine (a new process) join the next one. The wire format is the concatenation of every
tensor's bytes in layout order, cut into `bucket_bytes` windows: a bucket may end inside a tensor, so a bucket
smaller than the largest tensor works. Both sides hash what went over the wire; equal digests are the evidence
an engine got every byte.

Same role as vLLM 0.32's `vllm/distributed/weight_transfer` engines (NCCL/IPC), written against torch alone so
the learner side needs no vLLM (the GPU test machine has none) and the CPU build gets a gloo path.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int64": torch.int64}


@dataclass(frozen=True)
class ParamMeta:
    name: str
    dtype: str  # wire dtype, a key of DTYPES
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class Layout:
    """What a receiver needs to cut the byte stream back into named tensors (the only thing sent as a message)."""

    params: tuple[ParamMeta, ...]
    bucket_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(p.nbytes for p in self.params)

    @property
    def buckets(self) -> int:
        return math.ceil(self.total_bytes / self.bucket_bytes) if self.total_bytes else 0

    def bucket_size(self, k: int) -> int:
        return min(self.bucket_bytes, self.total_bytes - k * self.bucket_bytes)

    def to_wire(self) -> dict:
        """A plain dict (what any RPC layer encodes)."""
        return {"bucket_bytes": self.bucket_bytes, "params": [[p.name, p.dtype, list(p.shape)] for p in self.params]}

    @classmethod
    def from_wire(cls, wire: dict) -> Layout:
        return cls(tuple(ParamMeta(n, d, tuple(s)) for n, d, s in wire["params"]), wire["bucket_bytes"])


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    world: int  # 1 sender + every receiving worker
    backend: str  # "gloo" | "nccl"
    timeout_s: float


def wire_dtype(tensor: torch.Tensor, compute_dtype: str) -> str:
    """Floating weights travel in the engines' dtype (bf16 halves the bytes); integer buffers as they are."""
    return compute_dtype if tensor.is_floating_point() else "int64"


def open_store(host: str, world: int, timeout_s: float) -> tuple[object, int]:
    """The rendezvous server, bound now on this node (port 0: the OS picks a free one, no race with another
    process picking the same number). Returns the store (keep it alive for the transfer) and its port."""
    from torch.distributed import TCPStore

    store = TCPStore(host, 0, world, True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
    return store, store.port


def join(address: Address, rank: int, store=None):
    """This process's member of the transfer group (rank 0 passes the store it opened)."""
    from torch.distributed import PrefixStore, TCPStore

    timeout = timedelta(seconds=address.timeout_s)
    if store is None:
        store = TCPStore(address.host, address.port, address.world, False, timeout=timeout)
    prefixed = PrefixStore("crucible-weights", store)
    if address.backend == "nccl":
        from torch.distributed import ProcessGroupNCCL

        opts = ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return ProcessGroupNCCL(prefixed, rank, address.world, opts)
    from torch.distributed import ProcessGroupGloo

    return ProcessGroupGloo(prefixed, rank, address.world, timeout)


class Digest:
    """Hash of the bytes in stream order. CPU buckets: BLAKE2b over the bytes. CUDA buckets: a position-weighted
    sum computed on the device in 64 MiB pieces (hashing on the host would copy every byte off the GPU)."""

    def __init__(self) -> None:
        self.h = hashlib.blake2b(digest_size=8)
        self.offset = 0

    def update(self, buf: torch.Tensor) -> None:
        if buf.is_cuda:
            piece = 4 << 20  # int64 temporaries of 32 MiB each, next to a nearly full GPU
            for s in range(0, buf.numel(), piece):
                part = buf[s : s + piece].to(torch.int64)
                pos = torch.arange(self.offset + s, self.offset + s + part.numel(), device=buf.device) % 65521 + 1
                self.h.update(int((part * pos).sum()).to_bytes(8, "little", signed=True))
        else:
            self.h.update(buf.numpy().tobytes() if not buf.is_contiguous() else memoryview(buf.numpy()))
        self.offset += buf.numel()

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def send(pg, items: Iterable[tuple[str, torch.Tensor]], layout: Layout, device: torch.device) -> str:
    """Rank 0: pack `items` (in layout order, already in their wire dtype) into buckets and broadcast each.
    Returns the digest of every byte sent."""
    digest, bucket, fill, k = Digest(), None, 0, 0
    expected = iter(layout.params)
    for name, tensor in items:
        meta = next(expected, None)
        if meta is None or meta.name != name or tuple(tensor.shape) != meta.shape:
            raise RuntimeError(f"weight transfer: sent {name} {tuple(tensor.shape)} where the layout has "
                               f"{meta.name if meta else 'nothing'} {meta.shape if meta else ''}")
        data = tensor.detach().to(device).contiguous().view(-1).view(torch.uint8)
        pos = 0
        while pos < data.numel():
            if bucket is None:
                bucket = torch.empty(layout.bucket_size(k), dtype=torch.uint8, device=device)
            n = min(bucket.numel() - fill, data.numel() - pos)
            bucket[fill : fill + n].copy_(data[pos : pos + n])
            fill, pos = fill + n, pos + n
            if fill == bucket.numel():
                digest.update(bucket)
                pg.broadcast(bucket, 0).wait()
                bucket, fill, k = None, 0, k + 1
    if next(expected, None) is not None or k != layout.buckets:
        raise RuntimeError(f"weight transfer: sent {k} of {layout.buckets} buckets; the source ran out early")
    if device.type == "cuda":  # NCCL's wait() does not block the host: the last bucket may still be in flight
        torch.cuda.synchronize(device)
    return digest.hexdigest()


def close(pg) -> None:
    """End a transfer group now (not at garbage collection): NCCL communicators hold GPU memory."""
    for method in ("shutdown", "abort"):
        if hasattr(pg, method):
            try:
                getattr(pg, method)()
            except Exception:  # already torn down by a peer's failure
                pass
            return


def receive(pg, layout: Layout, device: torch.device, digest: Digest) -> Iterator[tuple[str, torch.Tensor]]:
    """Ranks 1..: the named tensors, each yielded as soon as its last byte arrived (a loader can copy it into
    place and drop it). `digest` accumulates every byte received."""
    params = iter(layout.params)
    meta = next(params, None)
    part = torch.empty(meta.nbytes, dtype=torch.uint8, device=device) if meta else None
    pos = 0
    for k in range(layout.buckets):
        bucket = torch.empty(layout.bucket_size(k), dtype=torch.uint8, device=device)
        pg.broadcast(bucket, 0).wait()
        digest.update(bucket)
        at = 0
        while at < bucket.numel():
            n = min(bucket.numel() - at, meta.nbytes - pos)
            part[pos : pos + n].copy_(bucket[at : at + n])
            at, pos = at + n, pos + n
            if pos == meta.nbytes:
                yield meta.name, part.view(DTYPES[meta.dtype]).view(meta.shape)
                meta = next(params, None)
                part = torch.empty(meta.nbytes, dtype=torch.uint8, device=device) if meta else None
                pos = 0
    # zero-size tensors (never in a bucket) come last or between: yield what is left
    while meta is not None and meta.nbytes == 0:
        yield meta.name, torch.empty(meta.shape, dtype=DTYPES[meta.dtype], device=device)
        meta = next(params, None)


def state_to_blobs(state: dict[str, torch.Tensor], max_bytes: int) -> list[bytes]:
    """The fallback path: the state as safetensors blobs of at most `max_bytes` each (a single tensor larger than
    that travels alone), so no message reaches msgspec's 4 GiB limit."""
    from safetensors.torch import save

    blobs, part, size = [], {}, 0
    for name, tensor in state.items():
        t = tensor.detach().contiguous().cpu()
        nbytes = t.numel() * t.element_size()
        if part and size + nbytes > max_bytes:
            blobs.append(save(part))
            part, size = {}, 0
        part[name], size = t, size + nbytes
    if part:
        blobs.append(save(part))
    return blobs
