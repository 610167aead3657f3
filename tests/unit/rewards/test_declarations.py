"""What the tests' translation unit keeps of a prompt (rewards.declarations), against hand-written cases."""

from __future__ import annotations

import pytest

from rewards.declarations import scan_braces, prompt_for_tests
from rewards.harness import assemble

TEMPLATE = "#include <vector>\ntemplate <typename T> T max_elem(const std::vector<T>& v) {\n"
BODY = "  T b = v[0];\n  for (const T& x : v) if (x > b) b = x;\n  return b;\n}\n"


def test_scan_braces_reads_literals_and_comments_as_gcc_does():
    text = "a = '}'; b = 1e+5; c = R\"x(}})x\"; d = u8\"}\"; e = L'}'; f = \"\\\"}\"; // }\n /* } */ }  after"
    scan = scan_braces(text, depth=1)
    assert scan.close == text.index("}  after") + 1 and scan.hostile == ""
    assert scan_braces("{ { }", stop_at_zero=False).depth == 1
    assert scan_braces("x; }", depth=2).close == -1  # still one block open


@pytest.mark.parametrize("body,what", [
    ("  return v[0];\n%> bool operator==(int, int) <%\n}\n", "digraph"),
    ("#define X }\n  return v[0];\n}\n", "preprocessor"),
    ("  return v[0]; %: \n}\n", "preprocessor"),
    ("  return v[0]; // \\\n}\n}\n", "line splice"),
    ("  return v[0]; /* ??> */\n}\n", "trigraph"),
    # found by review: each was copied and closed the body early in g++'s eyes, or acts beyond the block
    ("  return v[0]; //\r}\n//\r#define static_cast true ? true : static_cast\n//\rstatic void pad() {\n}\n",
     "carriage return"),
    ("  return v[0]; // \\\f\n{\n}\ninline int escaped() { return 7; }\n// \\\f\n}\n", "form feed"),
    ("  long big = 1'000; return v[0];\n}\n", "digit separator"),
    ("  int \u0663 = 0; (void)\u0663'\"'; return v[0];\n}\n", "outside a literal"),
    ("  int a$R = 0; (void)a$R\"(; return v[0];\n}\n", "outside a literal"),
    ('  _Pragma("redefine_extname memcmp fake") return v[0];\n}\n', "`_Pragma`"),
    ('  __asm__("nop"); return v[0];\n}\n', "`__asm__`"),
    ("  [[gnu::unused]] int x = 0; return v[0];\n}\n", "`gnu`"),
    ('  return v[0]; char c = \'\n}\n', "unterminated"),
])
def test_a_body_g_plus_plus_could_read_differently_is_not_copied(body, what):
    unit = prompt_for_tests(TEMPLATE, body)
    assert what in unit.body_error
    assert "max_elem(const std::vector<T>& v);" in unit.text  # declared only
    assert "return v[0]" not in unit.text and '#error "crucible:' in unit.text


def test_crlf_line_ends_are_read_as_g_plus_plus_reads_them():
    unit = prompt_for_tests(TEMPLATE, BODY.replace("\n", "\r\n"))
    assert unit.body_error == "" and "return b;\n}" in unit.text


def test_extern_c_declaration_without_braces_is_left_alone():
    text = prompt_for_tests('extern "C" int memo[10];\nint f(int i) {\n').text
    assert 'extern "C" int memo[10];' in text


def test_template_body_is_copied_up_to_its_closing_brace_only():
    unit = prompt_for_tests(TEMPLATE, BODY + "bool operator==(const std::vector<int>&, int) { return true; }\n")
    # `1` then the character literal '"', as g++ reads them (an older lexer took `1'` for a separator)
    quoted = prompt_for_tests(TEMPLATE, "  [[x::y(1'\"')]]; return v[0]; }\ninline int escaped() { return 7; }\n")
    assert quoted.body_error == "" and "escaped" not in quoted.text
    assert unit.body_error == "" and "for (const T& x : v)" in unit.text
    assert "operator==" not in unit.text  # what follows the function stays in the solution's unit
    assert prompt_for_tests(TEMPLATE, "  return v[0];\n").body_error == "the completion does not close the function"


def test_each_kind_of_definition_gets_the_rule_two_units_allow():
    prompt = ("#include <string>\nnamespace geo {\nconstexpr double PI = 3.14;\nint memo[10] = {0}, n;\n"
              "const char* names[] = {\"a\"};\nconst int K = 3;\nstatic int sq(int x) { return x * x; }\n"
              "inline int digit(char c) { return c - '0'; }\nint plain(int x) { return x; }\n"
              "auto twice(int x) { return 2 * x; }\ntemplate <class T> T id(T x) { return x; }\n"
              "struct S { int f() const; int g() { return 2; } static int count; };\nint S::count = 0;\n"
              "int S::f() const { return 1; }\ndouble area(double r) {\n")
    text = prompt_for_tests(prompt, "  return PI * r * r;\n}\n}  // namespace geo\n").text
    kept = ("constexpr double PI = 3.14;", "const int K = 3;", "static int sq(int x) { return x * x; }",
            "inline int digit(char c) { return c - '0'; }", "template <class T> T id(T x) { return x; }",
            "int g() { return 2; }", "auto twice(int x) { return 2 * x; }")
    assert all(k in text for k in kept), text
    assert "extern int memo[10], n;" in text and 'extern const char* names[];' in text
    assert "int plain(int x);" in text and "double area(double r);" in text and "PI * r" not in text
    assert "int S::f()" not in text and "S::count" not in text  # the class declares them


def test_out_of_class_member_to_complete_is_left_to_the_class():
    prompt = "struct Stack { int top() const; int v[4]; int n = 0; };\nint Stack::top() const {\n"
    text = prompt_for_tests(prompt, "  return v[n - 1];\n}\n").text
    assert "Stack::top" not in text and "int top() const;" in text


def test_function_inside_a_class_body_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match=r"define it after the class"):
        prompt_for_tests("struct S {\n  int f() {\n")


def test_assembled_template_unit_has_the_body_before_the_harness():
    a = assemble(TEMPLATE, BODY, "#include <cassert>\nint main() { assert(max_elem(std::vector<int>{1, 3}) == 3); }\n")
    unit = a.files["harness.cpp"]
    assert unit.index("for (const T& x : v)") < unit.index("namespace crucible_harness")
    assert a.body_error == ""
