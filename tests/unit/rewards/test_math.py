"""pass@k, reward composition, extraction and SipHash against hand-computed values."""

from math import comb

import pytest

from rewards.extract import close_function, completion_of, cut_at_stop, defines_function, extract, fenced_block
from rewards.passk import available_ks, mean_pass_at_k, pass_at_k
from rewards.official import humaneval_x_generation
from rewards.reward import RewardConfig, count_warnings, has_reasoning, reward_components, silences_warnings
from rewards.siphash import siphash24


@pytest.mark.parametrize("n,c,k,expected", [
    (10, 0, 1, 0.0), (10, 10, 1, 1.0), (10, 3, 1, 0.3),
    (5, 2, 2, 1 - comb(3, 2) / comb(5, 2)),  # 1 - 3/10 = 0.7
    (4, 1, 3, 0.75), (3, 1, 3, 1.0), (8, 7, 2, 1.0),
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_equals_brute_force_over_subsets():
    from itertools import combinations

    outcomes = [1, 0, 0, 1, 0, 0]
    for k in range(1, 7):
        subsets = list(combinations(outcomes, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(6, 2, k) == pytest.approx(brute)


def test_pass_at_k_bad_input_and_available_ks():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k(3, 1, 5)
    assert mean_pass_at_k([(2, 1), (2, 2)], 1) == pytest.approx(0.75)
    assert available_ks([8, 10, 9]) == [1, 2, 5]


def test_default_reward_components():
    cfg = RewardConfig()
    assert reward_components(False, 0, 0, 3, False, cfg) == {"compile": -1.0, "warnings": 0.0, "tests": 0.0, "reasoning": 0.0}
    # reasoning is paid only with the compile bonus: a block in a program that does not compile earns nothing
    assert reward_components(False, 0, 0, 3, True, cfg)["reasoning"] == 0.0
    full = reward_components(True, 0, 3, 3, True, cfg)
    assert full == {"compile": 1.0, "warnings": 0.5, "tests": 5.0, "reasoning": 0.5} and sum(full.values()) == 7.0
    partial = reward_components(True, 2, 1, 4, False, cfg)
    assert partial == {"compile": 1.0, "warnings": 0.0, "tests": 1.25, "reasoning": 0.0}


def test_bonus_requires_a_pass():
    cfg = RewardConfig(bonus_requires_a_pass=True)
    assert sum(reward_components(True, 0, 0, 3, False, cfg).values()) == 0.0
    assert sum(reward_components(True, 0, 0, 3, True, cfg).values()) == 0.0  # nor the reasoning bonus
    assert sum(reward_components(True, 0, 1, 3, False, cfg).values()) == pytest.approx(1 + 0.5 + 5 / 3)


def test_weights_are_configurable():
    cfg = RewardConfig(compile_fail=-2, compile_ok=0.25, no_warnings=0, tests=1, reasoning=0)
    assert sum(reward_components(True, 0, 1, 2, True, cfg).values()) == 0.75
    assert sum(reward_components(False, 0, 0, 2, True, cfg).values()) == -2


def test_reasoning_and_warning_detection():
    assert has_reasoning("/* REASONING: sort first, then the answer is the middle element */ return x;")
    assert not has_reasoning("// REASONING: nope") and not has_reasoning("/* reasoning */")
    out = ("/work/src/solution.cpp:3:5: warning: unused variable 'x' [-Wunused-variable]\n"
           "/work/src/solution.cpp:12:5: warning: comparison of integer expressions\n"
           "/work/src/test.cpp:20:1: warning: in the tests\n")
    assert count_warnings(out, "solution.cpp", first_line=10) == 1
    assert count_warnings(out, "solution.cpp") == 2 and count_warnings(out, "test.cpp") == 1


def test_extraction():
    assert cut_at_stop("  return 1;\n}\n\nint main", ("\n}\n", "\nint main")) == "  return 1;"
    assert cut_at_stop("abc", ()) == "abc"
    chat = "Here:\n```cpp\nint f(){return 1;}\n```\nand better:\n```c++\nint f(){return 2;}\n```\n"
    assert fenced_block(chat) == "int f(){return 2;}\n" and extract(chat, "chat") == "int f(){return 2;}\n"
    assert extract("no fence", "chat") == "no fence"
    assert extract("```cpp\nint g(){}\n", "chat") == "int g(){}\n"  # unterminated fence
    assert defines_function("long add(long a, long b) {\n return a+b; }", "add")
    assert not defines_function("long add(long a, long b);", "add")
    with pytest.raises(ValueError, match="unknown extraction mode"):
        extract("x", "json")


def test_siphash_reference_vectors():
    key = bytes(range(16))
    assert siphash24(key, b"") == 0x726FDB47DD0E0E31
    assert siphash24(key, bytes(range(15))) == 0xA129CA6149BE45E5
    assert siphash24(key, bytes(range(8))) == 0x93F5F5799A932462


@pytest.mark.parametrize("completion", [
    '#pragma GCC diagnostic ignored "-Wall"\n  return 1;\n}',
    '#  pragma GCC diagnostic push\n  return 1;\n}',
    '#pragma GCC system_header\n  return 1;\n}',
    '_Pragma("GCC diagnostic ignored \\"-Wunused\\"")\n  return 1;\n}',
    '#define P(a, b) a##b\n  P(_Pra, gma)("GCC diagnostic ignored \\"-Wall\\"")\n  return 1;\n}',
    '#line 1 "elsewhere.cpp"\n  int unused;\n  return 1;\n}',
    '# 1 "elsewhere.cpp"\n  int unused;\n  return 1;\n}',
])
def test_completions_that_can_hide_warnings_forfeit_the_bonus(completion):
    assert silences_warnings(completion)
    assert reward_components(True, 0, 1, 1, False, RewardConfig(), silenced=True)["warnings"] == 0.0


def test_ordinary_completions_keep_the_warnings_bonus():
    for completion in ("  return a + b;\n}", "  // a # b\n  return x > 1 ? 1 : 0;\n}", '  return "a # 1";\n}'):
        assert not silences_warnings(completion)
    assert reward_components(True, 0, 1, 1, False, RewardConfig(), silenced=False)["warnings"] == 0.5


def test_reasoning_needs_a_non_trivial_block():
    assert not has_reasoning("/* REASONING: */ return 1;")
    assert not has_reasoning("/* REASONING: ok */ return 1;")
    eight = "/* REASONING: the loop stops one short so extend it by one */"
    assert has_reasoning(eight) and not has_reasoning(eight, min_words=20)
    assert has_reasoning("/* REASONING: fine */", min_words=1) and not has_reasoning("/* REASONING: */", min_words=0)


@pytest.mark.parametrize("text,expected", [
    ("  return 1;\n}\n", "  return 1;\n}"),                            # a completion that closes keeps its brace
    ("  if (x) {\n    return 1;\n  }\n  return 0;\n}\n\nint main() {}\n",  # text after the function is dropped
     "  if (x) {\n    return 1;\n  }\n  return 0;\n}"),
    ("  return 1;", "  return 1;\n}"),                                  # cut at the stop "\n}\n": brace put back
    ("  return 1;\r\n", "  return 1;\n}"),
    ("  if (x) {\n    return 1;", "  if (x) {\n    return 1;"),          # cut inside a block: left as is
    ("  if (x) {\n    return 1;\n  }\n  while (y) {", "  if (x) {\n    return 1;\n  }"),  # kept to its last }
    ("", ""), ("   \n", "   \n"),                                        # nothing written: nothing added
])
def test_close_function_hand_values(text, expected):
    assert close_function(text) == expected
    assert completion_of(text, "raw", ("\n}\n",), "close-function") == expected


def test_close_function_agrees_with_the_official_generator_on_closed_texts():
    for text in ("  return 1;\n}\n", "  s = \"{\";\n  return 1;\n}\n}\n", "  for(;;){}\n}\nint main(){}"):
        assert close_function(text) == humaneval_x_generation(text)


@pytest.mark.parametrize("completion", [
    '#/**/line 1\n  int unused = 0;\n  return 1;\n}',                                   # a comment is a space
    '#pra\\\ngma GCC diagnostic ignored "-Wunused-variable"\n  return 1;\n}',        # line splice
    '#define P(a,b) a%:%:b\n  P(_Pr,agma)("GCC diagnostic ignored \\"-Wall\\"")\n}',  # digraph ##
    '%:line 1\n  int unused = 0;\n}', '??=line 1\n  int unused = 0;\n}',                # digraph / trigraph #
    '  const char* s = "//"; _Pragma("GCC diagnostic ignored \\"-Wall\\"")\n}',        # "//" in a string
])
def test_preprocessor_spellings_of_silencers_are_caught(completion):
    assert silences_warnings(completion)


def test_close_function_does_not_double_a_brace_the_naive_count_missed():
    text = "    for (char c: s) if (c=='{') n++;\n    return n;\n}\n"
    assert close_function(text) == humaneval_x_generation(text) == text.rstrip("\n")


def test_sanitizer_component():
    """Reported only with `sanitize` on; a finding adds the (negative) weight to whatever else was earned."""
    cfg = RewardConfig(sanitize=True)
    assert reward_components(True, 0, 3, 3, False, cfg) == {"compile": 1.0, "warnings": 0.5, "tests": 5.0,
                                                             "reasoning": 0.0, "sanitizer": 0.0}
    found = reward_components(True, 0, 2, 3, False, cfg, sanitizer_finding=True)
    assert found["sanitizer"] == -1.0 and sum(found.values()) == pytest.approx(1 + 0.5 + 10 / 3 - 1)
    assert reward_components(False, 0, 0, 3, False, cfg, sanitizer_finding=True)["sanitizer"] == 0.0
    assert reward_components(True, 0, 2, 3, False, RewardConfig(sanitize=True, sanitizer=-3.0),
                             sanitizer_finding=True)["sanitizer"] == -3.0
    assert "sanitizer" not in reward_components(True, 0, 3, 3, False, RewardConfig(), sanitizer_finding=True)
