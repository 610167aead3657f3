import time

import pytest

from sandbox.pool import _BinaryCache, _Compiled
from sandbox.runner import pch_key, split_flags
from sandbox.types import ExecResult, Job, StageLimits, TestCase, Verdict
from sandbox.worker import LineReader, WorkerError, decode_reply


def test_job_validation_names_the_field():
    with pytest.raises(ValueError, match="Job.files is empty"):
        Job({})
    with pytest.raises(ValueError, match="invalid file name '../x.cpp'"):
        Job({"../x.cpp": ""})
    with pytest.raises(ValueError, match="no C\\+\\+ translation unit"):
        Job({"a.h": ""})
    with pytest.raises(ValueError, match="StageLimits.cpu_s must be > 0"):
        StageLimits(cpu_s=0)


def test_compile_key_ignores_tests_but_run_key_does_not():
    a = Job({"a.cpp": "int main(){}"}, tests=(TestCase(b"1"),))
    b = Job({"a.cpp": "int main(){}"}, tests=(TestCase(b"2"),))
    assert a.compile_key() == b.compile_key() and a.run_key() != b.run_key()
    assert Job({"a.cpp": "int main(){}"}, flags=("-O0",)).compile_key() != a.compile_key()


def test_pch_key_ignores_warnings_and_link_flags_only():
    base = ["-std=c++17", "-O2"]
    assert pch_key(base) == pch_key([*base, "-Wall", "-Wextra", "-lcrypto", "-Wl,--as-needed"])
    assert pch_key(base) != pch_key(["-std=c++17", "-O0"])
    assert pch_key(base) != pch_key([*base, "-DNDEBUG"])


def test_split_flags_puts_libraries_after_sources():
    assert split_flags(["-O2", "-lcrypto", "-std=c++17", "-L/x", "-Wl,-z,now"]) == (
        ["-O2", "-std=c++17"], ["-lcrypto", "-L/x", "-Wl,-z,now"])


def test_line_reader_splits_chunks_and_times_out():
    chunks = [b'{"a":', b'1}\n{"b"', b":2}\n"]
    reader = LineReader(lambda _t: chunks.pop(0))
    deadline = time.monotonic() + 1
    assert reader.readline(deadline) == b'{"a":1}' and reader.readline(deadline) == b'{"b":2}'
    with pytest.raises(WorkerError, match="closed"):
        LineReader(lambda _t: b"").readline(deadline)
    with pytest.raises(WorkerError, match="in time"):
        LineReader(lambda _t: b"x").readline(time.monotonic() - 1)


def test_decode_reply_rejects_garbage_and_runner_errors():
    with pytest.raises(WorkerError, match="malformed"):
        decode_reply(b"not json", "w")
    with pytest.raises(WorkerError, match="runner failed: boom"):
        decode_reply(b'{"runner_error": "boom"}', "w")
    assert decode_reply(b'{"ok": true}', "w") == {"ok": True}


def _compiled(n: int) -> _Compiled:
    return _Compiled(ExecResult(Verdict.OK, 0, None, 0, 0, 0, "", "", False, False), "x" * n)


def test_binary_cache_evicts_least_recently_used_by_bytes():
    cache = _BinaryCache(max_bytes=250)
    cache.put("a", _compiled(100))
    cache.put("b", _compiled(100))
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", _compiled(100))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", _compiled(1000))
    assert cache.get("huge") is None


def test_fast_linker_is_skipped_when_the_job_controls_linking():
    from sandbox.runner import fast_linker_flags

    assert fast_linker_flags(["-O2", "-Wl,--wrap=malloc"]) == []
    assert fast_linker_flags(["-fuse-ld=bfd"]) == []
    assert fast_linker_flags(["-O2"]) in ([], ["-fuse-ld=mold"], ["-fuse-ld=lld"], ["-fuse-ld=gold"])


READELF = """
File: /work/harness.o

There are no section groups in this file.

Symbol table '.symtab' contains 4 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
     0: 0000000000000000     0 NOTYPE  LOCAL  DEFAULT  UND 
    24: 0000000000000000   133 FUNC    GLOBAL DEFAULT    6 main
    25: 0000000000000000     0 NOTYPE  GLOBAL DEFAULT  UND _Z7doubledSt6vectorIiSaIiEE
    26: 0000000000000000     0 NOTYPE  GLOBAL DEFAULT  UND memcmp

File: /work/solution.o

COMDAT group section [    1] `.group' [_ZNSt6vectorIiSaIiEED5Ev] contains 2 sections:
   [Index]    Name
   [    7]   .text._ZNSt6vectorIiSaIiEED2Ev
   [    8]   .rela.text._ZNSt6vectorIiSaIiEED2Ev

Symbol table '.symtab' contains 6 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
     3: 0000000000000000    10 FUNC    LOCAL  DEFAULT    1 helper
     4: 0000000000000000    60 FUNC    GLOBAL DEFAULT    1 _Z7doubledSt6vectorIiSaIiEE
     5: 0000000000000000    30 FUNC    WEAK   DEFAULT    7 _ZNSt6vectorIiSaIiEED2Ev
     6: 0000000000000040    20 FUNC    GLOBAL DEFAULT    1 memcmp
     7: 0000000000000060    20 FUNC    GLOBAL DEFAULT    1 main
     8: 0000000000000080    20 FUNC    WEAK   DEFAULT    1 strlen
"""


def test_readelf_listing_is_read_per_file_with_comdat_members_apart():
    from sandbox.runner import parse_readelf

    units = parse_readelf(READELF)
    assert units["/work/harness.o"]["undefined"] == {"_Z7doubledSt6vectorIiSaIiEE", "memcmp"}
    solution = units["/work/solution.o"]
    assert solution["defined"] == {"_Z7doubledSt6vectorIiSaIiEE", "memcmp", "main", "strlen"}  # locals ignored
    assert solution["comdat"] == {"_ZNSt6vectorIiSaIiEED2Ev"}


def test_private_units_give_the_tests_only_what_they_declared():
    from sandbox.runner import parse_readelf, private_symbols

    units = {path.rsplit("/", 1)[1].replace(".o", ".cpp"): u for path, u in parse_readelf(READELF).items()}
    libraries = frozenset({"memcmp", "strlen", "_ZNSt6vectorIiSaIiEED2Ev"})
    localise, refused = private_symbols(units, ["solution.cpp"], libraries)
    # the prompt's function stays; a second main, a weak strlen become the solution's own; COMDAT copies stay
    assert localise == ["main", "memcmp", "strlen"]
    assert refused == ["memcmp"]  # a library function the tests call, defined by the solution
    units["harness.cpp"]["undefined"].discard("memcmp")
    assert private_symbols(units, ["solution.cpp"], libraries) == (["main", "memcmp", "strlen"], [])
