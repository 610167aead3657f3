"""Tamper-proof assembly of assert-style tests (HumanEval-X, MultiPL-E, embedded function tasks).

The official harness compiles `prompt + completion + test` as one file, so a completion can `#define` the
test's asserts away, overload the test's `==`, define `main` or `__assert_fail`, or print a fake banner.
Here, by construction:

- `solution.cpp` = prompt + completion; `harness.cpp` = the prompt's declarations (plain functions' bodies
  replaced by `;`; templates and `inline` functions kept, the one to complete with the completion's body
  when it is provably one block: rewards.declarations) + our harness + the test code, in its own
  translation unit, helpers in an anonymous namespace. Completion macros and overloads cannot reach the
  test. solution.cpp is a private unit at link time (sandbox Job.private_units): the tests take from it only
  what they declared and no library provides, so its `memcmp`, `main` or `template <>` stay its own.
- Every `assert(...)` of the test becomes a harness check that records the result and goes on (so partial
  credit is per assert), and after the test's main returns the harness prints a `done` line.
- Each result line carries a SipHash-2-4 tag keyed by a per-run secret. The secret arrives on stdin and is
  read by a `.preinit_array` hook (harness.cpp links first, so before any `.preinit_array` entry or
  constructor of the completion runs), after which stdin is replaced by /dev/null. The harness makes raw
  system calls only (no libc symbol the completion could interpose). Lines without a valid tag are ignored, so a fake "passed" banner, an early `exit(0)`, a
  static initializer that exits, a SIGABRT handler or `quick_exit` cannot produce a pass.

Known hole (docs/tasks.md; reproduced by tests/integration/rewards/forgeries/ifunc_resolver.completion): the
secret lives in the candidate's process, so an IFUNC resolver (run before any `.preinit_array` entry), or
code that finds the key in memory afterwards, can forge tags. Closing it needs the tests judged outside the
candidate's process; no known model output does this.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from rewards.declarations import _cpp_parser, prompt_for_tests
from rewards.siphash import siphash24

HARNESS_CPP = r"""
// ---- crucible harness: own translation unit, raw syscalls only ----
namespace crucible_harness {
typedef unsigned long long u64;
static unsigned char key[16];
static long executions = 0;
#if defined(__x86_64__)
static long sys3(long n, long a, long b, long c) {
  long r; __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}
enum { SYS_READ = 0, SYS_WRITE = 1, SYS_OPEN = 2, SYS_CLOSE = 3, SYS_DUP2 = 33 };
#else
#error "crucible harness: only x86_64 is supported"
#endif
static u64 rotl(u64 x, int b) { return (x << b) | (x >> (64 - b)); }
static u64 load(const unsigned char* p, int n) { u64 v = 0; for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i]; return v; }
#define CRUCIBLE_SIPROUND v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32); v2 += v3; v3 = rotl(v3, 16); \
  v3 ^= v2; v0 += v3; v3 = rotl(v3, 21); v3 ^= v0; v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
static u64 siphash(const unsigned char* in, int len) {
  u64 k0 = load(key, 8), k1 = load(key + 8, 8);
  u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
  u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
  int full = len - len % 8;
  for (int i = 0; i < full; i += 8) { u64 m = load(in + i, 8); v3 ^= m; CRUCIBLE_SIPROUND CRUCIBLE_SIPROUND v0 ^= m; }
  u64 b = ((u64)len << 56) | load(in + full, len % 8);
  v3 ^= b; CRUCIBLE_SIPROUND CRUCIBLE_SIPROUND v0 ^= b; v2 ^= 0xff;
  CRUCIBLE_SIPROUND CRUCIBLE_SIPROUND CRUCIBLE_SIPROUND CRUCIBLE_SIPROUND
  return v0 ^ v1 ^ v2 ^ v3;
}
static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }
static void read_key(int, char**, char**) {
  char buf[32]; long got = 0;
  while (got < 32) { long n = sys3(SYS_READ, 0, (long)(buf + got), 32 - got); if (n <= 0) break; got += n; }
  for (int i = 0; i < 16 && got == 32; i++) key[i] = (unsigned char)(hexval(buf[2 * i]) * 16 + hexval(buf[2 * i + 1]));
  for (int i = 0; i < 32; i++) ((volatile char*)buf)[i] = 0;
  long fd = sys3(SYS_OPEN, (long)"/dev/null", 0, 0);
  if (fd >= 0 && fd != 0) { sys3(SYS_DUP2, fd, 0, 0); sys3(SYS_CLOSE, fd, 0, 0); }
}
__attribute__((section(".preinit_array"), used)) static void (*const preinit)(int, char**, char**) = read_key;
static int put_num(char* out, long v) {
  char tmp[24]; int n = 0, len = 0; unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
  do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
  if (v < 0) out[len++] = '-';
  while (n) out[len++] = tmp[--n];
  return len;
}
static void emit(const char* kind, long a, long b) {
  char line[96]; int n = 0;
  const char* pre = "@@crucible ";
  for (const char* p = pre; *p; p++) line[n++] = *p;
  int start = n;
  for (const char* p = kind; *p; p++) line[n++] = *p;
  line[n++] = ' '; n += put_num(line + n, a); line[n++] = ' '; n += put_num(line + n, b);
  u64 tag = siphash((const unsigned char*)line + start, n - start);
  line[n++] = ' ';
  for (int i = 15; i >= 0; i--) line[n++] = "0123456789abcdef"[(tag >> (4 * i)) & 15];
  line[n++] = '\n';
  sys3(SYS_WRITE, 1, (long)line, n);
}
static void check(long site, bool ok) { executions++; emit("assert", site, ok ? 1 : 0); }
}  // namespace crucible_harness
#define CRUCIBLE_ASSERT(site, ...) ::crucible_harness::check(site, static_cast<bool>(__VA_ARGS__))
"""

_ASSERT = re.compile(r"\bassert\s*\(")
_MAIN = re.compile(r"\bint\s+main\s*\(")
_LINE = re.compile(r"^@@crucible (assert|done) (-?\d+) (-?\d+) ([0-9a-f]{16})$", re.M)


def _returning_main(test: str) -> str:
    """Rename the test's main and make it return 0 at its end: only the real `main` may fall off its end."""
    source = test.encode()
    for node in _cpp_parser().parse(source).root_node.children:
        declarator = node.child_by_field_name("declarator") if node.type == "function_definition" else None
        if declarator is not None and declarator.text.decode().replace(" ", "").startswith("main("):
            end = node.child_by_field_name("body").end_byte - 1  # the closing brace
            source = source[:end] + b"\nreturn 0;\n" + source[end:]
            break
    return _MAIN.sub("int crucible_test_main(", source.decode(), count=1)


def _check_tests(test: str) -> None:
    if not _ASSERT.search(test):
        raise ValueError("field 'tests' has no assert(...) to check")
    if not _MAIN.search(test):
        raise ValueError("field 'tests' has no `int main(`")


def check_function_task(prompt: str, test: str) -> None:
    """What `assemble` needs of a task, checked when its file loads (ValueError naming the field)."""
    _check_tests(test)
    prompt_for_tests(prompt)


@dataclass(frozen=True)
class AssembledTest:
    files: dict[str, str]
    num_sites: int
    completion_first_line: int  # 1-based line in solution.cpp where the completion starts
    site_lines: tuple[str, ...] = ()  # site i+1's line of the task's tests, for explanations
    body_error: str = ""  # why the function's body, which the tests' unit needs, is not in it


def assemble(prompt: str, completion: str, test: str, continuation: str | None = None) -> AssembledTest:
    """Build solution.cpp and harness.cpp (the tests' translation unit) for an assert-style task.
    `continuation` is the text that follows the prompt's last `{` in the solution (default: `completion`);
    the tests' unit copies the function's body from it when the function is a template or `inline`
    (rewards.declarations)."""
    _check_tests(test)
    site_lines: list[str] = []  # site i+1's source line

    def site(m: re.Match) -> str:
        site_lines.append(test[test.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0].strip())
        return f"CRUCIBLE_ASSERT({len(site_lines)}, "

    body = _ASSERT.sub(site, test)
    includes = [line for line in body.splitlines() if line.lstrip().startswith("#include")]
    rest = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#include"))
    rest = _returning_main(rest)
    unit_prompt = prompt_for_tests(prompt, completion if continuation is None else continuation)
    test_cpp = (
        unit_prompt.text + "\n" + "\n".join(includes) + "\n" + HARNESS_CPP
        + "namespace {\n" + rest + "\n}  // namespace\n"
        + "int main() { crucible_test_main(); ::crucible_harness::emit(\"done\", "
        "::crucible_harness::executions, 0); return 0; }\n"
    )
    # harness.cpp links before solution.cpp (the runner links in sorted order), so the harness's own
    # .preinit_array entry runs before any the completion adds and takes the secret off stdin first.
    return AssembledTest({"solution.cpp": prompt + completion + "\n", "harness.cpp": test_cpp}, len(site_lines),
                         prompt.count("\n") + 1, tuple(site_lines), unit_prompt.body_error)


def new_secret() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class HarnessReport:
    completed: bool  # an authentic `done` line, consistent with the assert lines seen
    sites_passed: int
    num_sites: int
    forged_lines: int  # lines that look like ours but carry a bad tag
    failed_sites: tuple[int, ...] = ()  # sites that ran and failed at least once
    unreached_sites: tuple[int, ...] = ()  # sites with no authentic line (the run ended before them)


def verify(stdout: str, secret: str, num_sites: int) -> HarnessReport:
    """Count only tagged lines; a site passes when it ran and never failed."""
    key = bytes.fromhex(secret)
    ok_sites: set[int] = set()
    failed_sites: set[int] = set()
    executions = 0
    done: int | None = None
    forged = 0
    for kind, a, b, tag in _LINE.findall(stdout):
        if siphash24(key, f"{kind} {a} {b}".encode()) != int(tag, 16):
            forged += 1
            continue
        if kind == "assert":
            executions += 1
            (ok_sites if b == "1" else failed_sites).add(int(a))
        elif done is None:
            done = int(a)
    passed = len({s for s in ok_sites - failed_sites if 1 <= s <= num_sites})
    completed = done is not None and done == executions and executions > 0
    sites = range(1, num_sites + 1)
    return HarnessReport(completed, passed, num_sites, forged,
                         tuple(s for s in sites if s in failed_sites),
                         tuple(s for s in sites if s not in failed_sites and s not in ok_sites))
