"""Names shared by the image build, the backends and `doctor`: the image tag and the PCH flag sets.

Bump IMAGE_VERSION whenever the image contents or `runner.pch_key` change, so stale images are rebuilt.
"""

IMAGE_VERSION = "3"
DEFAULT_IMAGE = f"crucible-sandbox:{IMAGE_VERSION}"
DEFAULT_FLAGS: tuple[str, ...] = ("-std=c++17", "-O2")
# What a sanitized job (Job.sanitize) adds to its flags: AddressSanitizer + UndefinedBehaviorSanitizer, every
# finding fatal (a program cannot report and carry on), frame pointers and line tables for the report's frames,
# and uninitialised locals filled with a fixed pattern (0xFE bytes), so a read of one gives the same wrong value
# on every run (no sanitizer of GCC's detects it; a verdict that depended on stack garbage would be noise).
# Two -fsanitize= flags, not one with a comma: the image build joins a PCH flag set with commas.
SANITIZE_FLAGS: tuple[str, ...] = ("-fsanitize=address", "-fsanitize=undefined", "-fno-sanitize-recover=all",
                                   "-fno-omit-frame-pointer", "-g1", "-ftrivial-auto-var-init=pattern")
# bits/stdc++.h is precompiled for each of these (the PCH is used only when a job's flags match one): ours,
# and the official executors' (MultiPL-E: -std=c++17; HumanEval-X: -std=c++11; no optimisation).
# A sanitized build needs its own PCH (g++ refuses one built without __SANITIZE_ADDRESS__).
PCH_FLAG_SETS: tuple[tuple[str, ...], ...] = (DEFAULT_FLAGS, ("-std=c++20", "-O2"), ("-std=c++17",), ("-std=c++11",),
                                              (*DEFAULT_FLAGS, *SANITIZE_FLAGS))
RUNNER_MOUNT = "/opt/crucible/runner.py"
PCH_MOUNT = "/opt/crucible/pch"
