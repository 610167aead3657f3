"""SandboxConfig: which isolation backend, how many workers, their jail limits and the default job limits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.image import DEFAULT_IMAGE
from sandbox.types import DEFAULT_COMPILE_LIMITS, DEFAULT_RUN_LIMITS, StageLimits


class LimitsConfig(BaseModel):
    """Per-stage limits (see sandbox.types.StageLimits)."""

    model_config = ConfigDict(extra="forbid")
    cpu_s: float = Field(gt=0)
    wall_s: float = Field(gt=0)
    memory_mb: int = Field(gt=0)
    max_processes: int = Field(gt=0)
    max_file_mb: int = Field(gt=0)
    max_output_bytes: int = Field(gt=0)
    max_open_files: int = Field(gt=3)
    stack_mb: int = Field(default=64, gt=0)

    def to_limits(self) -> StageLimits:
        return StageLimits(**self.model_dump())

    @classmethod
    def of(cls, limits: StageLimits) -> "LimitsConfig":
        return cls(**limits.__dict__)


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["docker", "bwrap"] = "docker"
    num_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    max_retries: int = Field(default=2, ge=0, description="re-runs of a job after an infrastructure failure")
    dedupe: bool = Field(default=True, description="run identical jobs in a batch once, compile once per source")
    cache_mb: int = Field(default=512, ge=0, description="host-side cache of compiled binaries (0 disables)")
    compile_limits: LimitsConfig = LimitsConfig.of(DEFAULT_COMPILE_LIMITS)
    run_limits: LimitsConfig = LimitsConfig.of(DEFAULT_RUN_LIMITS)
    # Jail-wide limits (cgroup for Docker; tmpfs sizes for both). They back up the per-process rlimits.
    image: str = DEFAULT_IMAGE
    worker_cpus: float = Field(default=1.0, gt=0)
    worker_memory_mb: int = Field(default=3072, ge=256)
    worker_pids: int = Field(default=128, ge=16)
    scratch_mb: int = Field(default=256, ge=16, description="size of each of /work and /tmp")
    shm_mb: int = Field(default=64, ge=1)
    scratch_inodes: int = Field(default=16384, ge=256, description="files+directories in each scratch tmpfs "
                                "(Docker; an inode flood is kernel memory no rlimit counts)")
    startup_timeout_s: float = Field(default=60.0, gt=0)
    reply_margin_s: float = Field(default=15.0, gt=0, description="slack over the job's own time limits")
    wipe_timeout_s: float = Field(
        default=5.0, gt=0, description="bound on each scratch cleanup in the jail; a jail not clean in time is "
        "replaced after its job (the job keeps its verdict)")
    bwrap_cgroup: bool = Field(
        default=True, description="bwrap: put each jail in a memory+pids cgroup (worker_memory_mb, worker_pids) "
        "where the host lets us make one (sandbox/cgroup.py)")
    bwrap_cgroup_parent: Path | None = Field(default=None, description="bwrap on cgroup v2: a delegated "
                                             "directory whose cgroup.subtree_control enables memory and pids")
    bwrap_cache_dir: Path | None = Field(
        default=None, description="bwrap: world-readable host dir for the runner copy and precompiled "
        "headers (built on first use); default /var/cache/crucible as root, else ~/.cache/crucible")
