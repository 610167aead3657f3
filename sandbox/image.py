"""Names shared by the image build, the backends and `doctor`: the image tag and the PCH flag sets.

Bump IMAGE_VERSION whenever the image contents or `runner.pch_key` change, so stale images are rebuilt.
"""

IMAGE_VERSION = "2"
DEFAULT_IMAGE = f"crucible-sandbox:{IMAGE_VERSION}"
DEFAULT_FLAGS: tuple[str, ...] = ("-std=c++17", "-O2")
# bits/stdc++.h is precompiled for each of these (the PCH is used only when a job's flags match one): ours,
# and the official executors' (MultiPL-E: -std=c++17; HumanEval-X: -std=c++11; no optimisation).
PCH_FLAG_SETS: tuple[tuple[str, ...], ...] = (DEFAULT_FLAGS, ("-std=c++20", "-O2"), ("-std=c++17",), ("-std=c++11",))
RUNNER_MOUNT = "/opt/crucible/runner.py"
PCH_MOUNT = "/opt/crucible/pch"
