"""Which g++ flags a job (or a task file) may pass: an allowlist of forms, nothing else.

Why an allowlist: g++ flags are a program of their own. `-wrapper` and `-fplugin=` run arbitrary code
outside the compiled program, `-B`/`-specs=`/`@file` replace the tools and read files, `-save-temps` and
`-fdump-*` leave the test source (with its expected values) on disk for the run stage, and any path (`-I/etc`,
`-include /proc/...`) reaches outside the job. A denylist misses the next such flag; these forms are the ones
judges and competitive programmers use, each a single token without a path.
"""

from __future__ import annotations

import re

# Each form is matched against the whole token (re.fullmatch).
ALLOWED_FORMS: tuple[tuple[str, str], ...] = (
    (r"-std=(c|gnu)\+\+(98|03|0x|11|1y|14|1z|17|2a|20|2b|23|2c|26)", "language standard"),
    (r"-O([0-3sgz]|fast)?", "optimisation level"),
    (r"-g[0-3]?", "debug information"),
    (r"-W(no-)?[a-zA-Z0-9+=_-]+", "warning switch (no comma: -Wl, -Wa, -Wp, pass options through)"),
    (r"-c|-w|-pedantic|-pedantic-errors|-ansi|-pthread|-fopenmp|-static|-static-libstdc\+\+|-static-libgcc",
     "plain switch"),
    (r"-pie|-no-pie|-rdynamic|-s|-pipe|-fPIC|-fPIE|-fpic|-fpie", "code generation switch"),
    (r"-f(no-)?[a-z0-9][a-z0-9-]*(=[A-Za-z0-9_.,+-]+)?", "-f option (no path, see DENIED_F)"),
    (r"-m(no-)?[a-z0-9][a-z0-9.-]*(=[A-Za-z0-9_.,+-]+)?", "machine option"),
    (r"-D[A-Za-z_][A-Za-z0-9_]*(=[^\n\r\0]*)?", "macro definition"),
    (r"-U[A-Za-z_][A-Za-z0-9_]*", "macro removal"),
    (r"-l[A-Za-z0-9_+.-]+", "library by name"),
    (r"-fuse-ld=(bfd|gold|lld|mold)", "linker choice"),
    (r"-Wl,(-O[0-9]|--as-needed|--no-as-needed|--gc-sections|-z,(relro|now|noexecstack))", "linker switch"),
    (r"--param=[a-z0-9-]+=[0-9]+", "optimiser parameter"),
)
# -f options that write files (with sources in them) or load code, whatever their value.
DENIED_F = ("plugin", "dump", "profile", "auto-profile", "callgraph-info", "stack-usage", "debug-prefix-map",
            "file-prefix-map", "macro-prefix-map", "save-optimization-record", "opt-info", "compare-debug",
            "diagnostics-format", "deps", "lto-", "ltrans", "wpa", "record-gcc-switches", "sanitize-coverage",
            "instrument-functions-exclude-file-list")
_COMPILED = [re.compile(form) for form, _ in ALLOWED_FORMS]


def flag_problem(flag: object) -> str | None:
    """Why `flag` is refused, or None when it is allowed."""
    if not isinstance(flag, str):
        return f"flags must be strings, got {type(flag).__name__}"
    if not any(p.fullmatch(flag) for p in _COMPILED):
        return f"flag {flag!r} is not an allowed form (see sandbox/flags.py ALLOWED_FORMS)"
    if flag.startswith("-f") and not flag.startswith("-fuse-ld="):
        name = flag[2:].removeprefix("no-")
        if name.startswith("sanitize"):
            return (f"flag {flag!r}: sanitizers are a job option, not a flag (Job.sanitize, `reward.sanitize`): "
                    "the sandbox sets their flags, runtime options and memory bound together")
        if name.startswith(DENIED_F):
            return f"flag {flag!r} writes files or loads code (sandbox/flags.py DENIED_F)"
    return None


def check_flags(flags, field: str = "flags") -> None:
    """Raise ValueError naming the field and the first refused flag."""
    if isinstance(flags, str):
        raise ValueError(f"{field}: expected a list of flags, got the string {flags!r}")
    for flag in flags:
        problem = flag_problem(flag)
        if problem:
            raise ValueError(f"field {field!r}: {problem}")
