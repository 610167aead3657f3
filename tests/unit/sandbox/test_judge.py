import base64
import errno
import signal

import pytest

from sandbox.judge import classify_run, decode_output, judge_compile, judge_job
from sandbox.types import Job, StageLimits, TestCase, Verdict

LIM = StageLimits(cpu_s=1, wall_s=2, memory_mb=100, max_output_bytes=50)


def outcome(**kw):
    base = {"exit_code": 0, "signal": None, "killed_for": None, "exec_errno": None, "cpu_s": 0.01,
            "wall_s": 0.01, "memory_mb": 5.0, "stdout_b64": "", "stderr_b64": "", "output_bytes": 0}
    base.update(kw)
    return base


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


@pytest.mark.parametrize("kw,verdict", [
    ({}, Verdict.OK),
    ({"exit_code": 1}, Verdict.RUNTIME_ERROR),
    ({"exit_code": None, "signal": signal.SIGSEGV}, Verdict.RUNTIME_ERROR),
    ({"exit_code": None, "signal": signal.SIGSEGV, "memory_mb": 95.0}, Verdict.MEMORY_LIMIT),
    ({"exit_code": None, "signal": signal.SIGABRT, "stderr_b64": b64(b"what():  std::bad_alloc")}, Verdict.MEMORY_LIMIT),
    ({"exit_code": None, "signal": signal.SIGXCPU, "cpu_s": 1.0}, Verdict.TIME_LIMIT),
    ({"exit_code": None, "signal": signal.SIGKILL, "cpu_s": 2.0}, Verdict.TIME_LIMIT),
    ({"exit_code": None, "signal": signal.SIGKILL, "cpu_s": 0.1}, Verdict.MEMORY_LIMIT),
    ({"exit_code": None, "signal": signal.SIGKILL, "killed_for": "wall_limit"}, Verdict.TIME_LIMIT),
    ({"exit_code": None, "signal": signal.SIGKILL, "killed_for": "output_limit"}, Verdict.OUTPUT_LIMIT),
    ({"exit_code": None, "signal": signal.SIGXFSZ}, Verdict.OUTPUT_LIMIT),
    ({"exit_code": 127, "exec_errno": errno.ENOMEM}, Verdict.MEMORY_LIMIT),
    ({"exit_code": 127, "exec_errno": errno.EACCES}, Verdict.RUNTIME_ERROR),
    # our own kill decides, even if the program had also exceeded something else
    ({"exit_code": None, "signal": signal.SIGKILL, "killed_for": "wall_limit", "memory_mb": 99.0}, Verdict.TIME_LIMIT),
])
def test_classify_run(kw, verdict):
    assert classify_run(outcome(**kw), LIM)[0] is verdict


def test_decode_output_escapes_invalid_utf8_and_flags_truncation():
    text, truncated = decode_output(b"ok \xff\xfe \xc3\xa9", limit=100)
    assert text == "ok \\xff\\xfe é" and not truncated
    assert decode_output(b"x" * 11, limit=10) == ("x" * 10, True)


def test_judge_compile_names_the_limit():
    assert judge_compile(outcome(exit_code=None, signal=9, killed_for="wall_limit")).detail == "compile time limit"
    assert judge_compile(outcome()).verdict is Verdict.OK
    assert judge_compile(outcome(exit_code=1)).verdict is Verdict.COMPILE_ERROR


def test_judge_job_checks_expected_output_and_reports_first_failure():
    job = Job({"a.cpp": ""}, tests=(TestCase(expected_stdout="1"), TestCase(expected_stdout="2"),
                                    TestCase(expected_stdout=None)), run_limits=LIM)
    reply = {"runs": [outcome(stdout_b64=b64(b"1\n")), outcome(stdout_b64=b64(b"3")), outcome(exit_code=4)]}
    result = judge_job(job, reply, judge_compile(outcome()))
    assert [t.verdict for t in result.tests] == [Verdict.OK, Verdict.WRONG_ANSWER, Verdict.RUNTIME_ERROR]
    assert result.verdict is Verdict.WRONG_ANSWER and result.tests_passed == 1 and result.tests_total == 3


def test_judge_job_compile_error_has_no_tests():
    job = Job({"a.cpp": ""})
    result = judge_job(job, {"runs": []}, judge_compile(outcome(exit_code=1, stderr_b64=b64(b"error: x"))))
    assert result.verdict is Verdict.COMPILE_ERROR and result.tests == [] and "error: x" in result.to_json()["compile_output"]
