"""The pure parts of evaluation and monitoring: bits-per-byte, FIM eval examples, the loss-spike detector
and the peak-FLOP/s lookup behind MFU."""

from __future__ import annotations

import math
import os

import pytest
import torch

from pretrain.evaluate import FimExample, bits_per_byte, fim_examples
from pretrain.monitor import CPU_TFLOPS_PER_CORE, LossSpikeDetector, device_peak_tflops

# --- bits per byte -----------------------------------------------------------------------------------------


def test_bits_per_byte_one_bit_per_byte():
    assert bits_per_byte(math.log(2) * 10, 10) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("nats, num_bytes, bits", [
    (math.log(256) * 100, 100, 8.0),  # uniform over the 256 byte values: 8 bits per byte
    (math.log(2) * 8, 2, 4.0),       # 8 bits spread over 2 bytes
    (math.log(4) * 3, 12, 0.5),      # 3 tokens of 2 bits each, 4 bytes per token
    (0.0, 5, 0.0),                   # perfect prediction
])
def test_bits_per_byte_by_hand(nats, num_bytes, bits):
    assert bits_per_byte(nats, num_bytes) == pytest.approx(bits, abs=1e-12)


def test_bits_per_byte_with_no_bytes_divides_by_one():
    """Only special tokens as targets: their nats still count, over a denominator clamped to one byte."""
    assert bits_per_byte(math.log(2) * 3, 0) == pytest.approx(3.0)


# --- FIM eval examples -------------------------------------------------------------------------------------

CODE = "int f(int x) {\n  int y = x * 2;\n  return y + 1;\n}\n"


def test_fim_example_middle_is_one_whole_inner_line():
    (ex,) = fim_examples([CODE], count=1, seed=0)
    assert ex.middle in {"  int y = x * 2;\n", "  return y + 1;\n"}
    assert ex.prefix + ex.middle + ex.suffix == CODE
    assert ex.prefix.endswith("\n") and ex.middle.endswith("\n")


@pytest.mark.parametrize("seed", range(8))
def test_fim_example_partitions_the_text_for_any_seed(seed):
    texts = [CODE, "a\nbbb\n\n   \nccc\nd", "x\n  }\n  ok;\ny\n"]
    for text, ex in zip(texts, fim_examples(texts, count=3, seed=seed)):
        assert ex.prefix + ex.middle + ex.suffix == text
        lines = text.splitlines(keepends=True)
        assert ex.middle in lines[1:-1] and len(ex.middle.strip()) >= 3  # never a blank or one-brace line


def test_fim_example_skips_a_short_middle_line():
    # inner lines: "  }" (too short once stripped) and "  ok;" -> always the latter
    assert fim_examples(["x\n  }\n  ok;\ny\n"], count=1, seed=5) == [FimExample("x\n  }\n", "  ok;\n", "y\n")]


def test_fim_examples_are_deterministic_per_seed():
    texts = [CODE * 3, "\n".join(f"line_{i} = {i};" for i in range(20))]
    assert fim_examples(texts, count=2, seed=7) == fim_examples(texts, count=2, seed=7)
    middles = {tuple(e.middle for e in fim_examples(texts, count=2, seed=s)) for s in range(10)}
    assert len(middles) > 1  # the seed does choose


def test_fim_examples_skip_documents_with_fewer_than_three_lines():
    texts = ["one line only", "two\nlines\n", CODE]
    examples = fim_examples(texts, count=3, seed=0)
    assert len(examples) == 1
    assert examples[0].prefix + examples[0].middle + examples[0].suffix == CODE


def test_fim_examples_stop_at_count():
    assert len(fim_examples([CODE] * 5, count=2)) == 2


# --- loss spikes -------------------------------------------------------------------------------------------


def test_spike_above_factor_times_the_mean():
    det = LossSpikeDetector(2.0, 4)
    assert [det.update(x) for x in [1.0, 1.0, 1.0, 3.0]] == [False, False, False, True]


def test_exactly_factor_times_the_mean_is_not_a_spike():
    det = LossSpikeDetector(2.0, 4)
    assert [det.update(x) for x in [1.0, 1.0, 2.0]] == [False, False, False]


def test_spikes_do_not_enter_the_history():
    det = LossSpikeDetector(2.0, 4)
    assert [det.update(x) for x in [1.0, 1.0, 1.0, 3.0, 3.0, 3.0]] == [False, False, False, True, True, True]
    assert list(det.history) == [1.0, 1.0, 1.0]


def test_needs_two_losses_of_history_before_flagging():
    det = LossSpikeDetector(2.0, 4)
    assert det.update(1.0) is False
    assert det.update(100.0) is False  # one loss is no baseline: this one is believed
    assert det.update(1000.0) is True  # 1000 > 2 x mean(1, 100)


def test_needs_half_a_window_of_history():
    det = LossSpikeDetector(2.0, 10)
    assert [det.update(x) for x in [1.0, 1.0, 1.0, 1.0, 9.0]] == [False] * 5  # 4 < 10 // 2
    assert det.update(100.0) is True  # now 5 losses, mean 2.6


def test_baseline_is_the_last_window_losses():
    det = LossSpikeDetector(2.0, 4)
    for x in [1.0, 1.0, 1.0, 1.0, 1.5, 1.5, 1.5, 1.5]:
        assert det.update(x) is False
    assert det.update(2.9) is False  # the 1.0s left the window: mean 1.5, threshold 3.0 (not 2.5)
    assert det.update(3.8) is True  # mean(1.5, 1.5, 1.5, 2.9) = 1.85, threshold 3.7


def test_state_dict_round_trip_continues_identically():
    a = LossSpikeDetector(2.0, 4)
    for x in [1.0, 1.2, 0.9, 5.0, 1.1]:
        a.update(x)
    b = LossSpikeDetector(2.0, 4)
    b.load_state_dict(a.state_dict())
    assert list(b.history) == list(a.history) == [1.0, 1.2, 0.9, 1.1]  # 5.0 was a spike
    tail = [1.0, 2.5, 2.3, 7.0, 1.0]  # baseline mean stays 1.05: threshold 2.1
    assert [b.update(x) for x in tail] == [a.update(x) for x in tail] == [False, True, True, True, False]


def test_a_nan_loss_does_not_disable_the_detector():
    det = LossSpikeDetector(2.0, 4)
    for x in [1.0, 1.0, 1.0, float("nan")]:
        det.update(x)
    assert det.update(3.0) is True


# --- peak FLOP/s -------------------------------------------------------------------------------------------


def test_configured_peak_wins():
    assert device_peak_tflops(123.0) == (123.0, "config")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback only applies without CUDA")
def test_cpu_peak_is_per_core_times_cores():
    tflops, source = device_peak_tflops(None)
    cores = len(os.sched_getaffinity(0))
    assert tflops > 0 and tflops == pytest.approx(CPU_TFLOPS_PER_CORE * cores)
    assert "cpu" in source and str(cores) in source


def test_complete_definition_keeps_the_closing_brace_and_drops_the_rest():
    from pretrain.evaluate import complete_definition
    from rewards.types import Task

    fn = Task(task_id="t/f", kind="function", prompt="int f() {\n", tests="int main() { assert(f() == 1); }")
    assert complete_definition(fn, "    return 1;\n}\nint g() { junk") == "    return 1;\n}\n"
    assert complete_definition(fn, "    return 1;") == "    return 1;"  # no end: everything (it won't compile)
    struct = Task(task_id="t/s", kind="compile", prompt="struct P {\n")
    assert complete_definition(struct, "    int x;\n};\nstruct Q {") == "    int x;\n};\n"


def test_complete_definition_cuts_benchmark_tasks_as_the_scorer_does():
    """MultiPL-E's suffix adds "\n}" back (keeping the stop would close the function twice); HumanEval-X
    keeps exactly the closing brace."""
    from pretrain.evaluate import complete_definition
    from rewards.scorer import solution_source
    from rewards.types import Task

    mpe = Task(task_id="m", kind="function", prompt="long f() {\n", tests="\nint main() { assert(f() == 1); }",
               stop_tokens=("\n}",), completion_suffix="\n}")
    source, _ = solution_source(mpe, complete_definition(mpe, "    return 1;\n}\nint g() {}"), "raw")
    assert source == "long f() {\n    return 1;\n}\n"
    hx = Task(task_id="h", kind="function", prompt="int f(){\n", tests="int main() { assert(f() == 1); }",
              stop_tokens=("\n}\n",), finish="close-function")
    assert complete_definition(hx, "    return 1;\n}\nint main() {}") == "    return 1;\n}"
