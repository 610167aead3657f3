"""What the tests' translation unit sees of a function task's prompt (rewards.harness builds that unit).

The tests must see the prompt's types and prototypes but define nothing the solution also defines, or the
link fails with a duplicate symbol. Each definition of the prompt is therefore treated by what C++ allows
in two translation units at once:

- a plain function (external linkage): its body becomes `;`, the solution defines it;
- a template, an `inline`, `static`, `constexpr` or `consteval` function, or one with a deduced return
  type (`auto f(...) {`): kept whole (a caller needs its body). The solution's unit is private at link
  time (Job.private_units), so its own definitions of these neither clash with the tests' copies nor
  replace them (an explicit specialisation `template <> int f<int>(...)` stays the solution's);
- an out-of-class member definition (`int Stack::top() const {...}`): dropped, the class declares it
  (kept if it is a template's or `inline`);
- a mutable global variable (`int memo[100] = {0};`): becomes an `extern` declaration;
- classes, typedefs, constants, using-directives: kept as they are.

The function to complete (the prompt ends inside its body) follows the same rules. Where its body must be
in the tests' unit (a template, `inline`, ...), the completion's body is copied there, in place, but only
when a lexer that matches g++'s can prove it is one balanced block of ordinary tokens: no preprocessor
directive, digraph brace, trigraph or line splice, which could close the block early in g++'s eyes and put
the completion's own declarations (an `operator==` the tests' templates would find) beside the tests,
and no pragma operator, inline assembly or GNU attribute, which act beyond the block. The block comes
before the harness and the tests, so it cannot name either. A body that is not proven gets an `#error` in
the tests' unit (a compile error with the reason) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_SCOPES = ("namespace_definition", "declaration_list", "linkage_specification", "template_declaration")
_KEEP_SPECIFIERS = {"static", "inline", "constexpr", "consteval"}


@lru_cache(maxsize=1)
def _cpp_parser():
    import tree_sitter_cpp
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_cpp.language()))


@dataclass(frozen=True)
class Scan:
    """A brace scan of C++ text: `close` is the index just past the brace that brings the depth to 0 (-1 if
    none does), `depth` the depth at the end, `hostile` the first construct that g++ could read differently
    from this lexer (empty if none)."""

    close: int
    depth: int
    hostile: str


# Identifiers a copied body may not use: a pragma operator (`redefine_extname`, `weak main`, `pack` stay in
# force for the harness and tests that follow), inline assembly (the assembler sees the harness's private
# symbols), GNU attributes (`section`, `alias`).
_BANNED = frozenset({"_Pragma", "__pragma", "asm", "__asm", "__asm__", "__attribute__", "__attribute", "gnu",
                     "__gnu__"})
_RAW_PREFIXES = frozenset({"R", "u8R", "uR", "UR", "LR"})
_RAW_DELIMITER = re.compile(r'[^\s()\\"]{0,16}')


def scan_braces(text: str, depth: int = 0, stop_at_zero: bool = True) -> Scan:
    """Count `{` and `}` outside comments, string, character and raw string literals, stopping where the
    depth first comes down to 0 (`stop_at_zero`). `hostile` names the first construct this lexer does not
    read exactly as g++ does in every language mode, or that can act beyond the block (a directive, a pragma,
    asm); only text without one is proven to be what the count says. Strict by design: an honest body
    rarely needs any of these, and a miss would let text escape the block."""
    i, n, hostile = 0, len(text), ""

    def flag(what: str) -> None:
        nonlocal hostile
        hostile = hostile or what

    if re.search(r"[\r\f\v\0]", text):
        flag("a carriage return, form feed, vertical tab or NUL")
    if re.search(r"\\[ \t]*\n", text):
        flag("a line splice (backslash-newline)")
    if re.search(r"\?\?[=/'()!<>\-]", text):
        flag("a trigraph")
    while i < n:
        c, two = text[i], text[i:i + 2]
        if two == "//":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif two == "/*":
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c.isascii() and (c.isalpha() or c == "_"):  # an identifier, or a literal's prefix
            j = i + 1
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            if word in _BANNED:
                flag(f"`{word}`")
            if j < n and text[j] == '"' and word in _RAW_PREFIXES:
                i, problem = _skip_raw(text, j)
                flag(problem)
            else:
                i = j
        elif "0" <= c <= "9" or (c == "." and "0" <= text[i + 1:i + 2] <= "9"):  # a pp-number, as g++ reads one
            j = i + 1
            while j < n:
                ch = text[j]
                if ch.isascii() and (ch.isalnum() or ch in "_."):
                    j += 1
                elif ch in "+-" and text[j - 1] in "eEpP":
                    j += 1
                elif ch == "'" and re.match(r"[A-Za-z0-9_]", text[j + 1:j + 2]):
                    flag("a digit separator (not one in C++11)")
                    j += 2
                else:
                    break
            i = j
        elif c in "\"'":
            i, problem = _skip_quoted(text, i, c)
            flag(problem)
        else:
            if c == "#" or two == "%:":
                flag("a preprocessor directive")
            elif two in ("<%", "%>"):
                flag(f"the digraph {two!r}")
            elif c == "\\":
                flag("a backslash outside a literal")
            elif c == "$" or not c.isascii():
                flag(f"the character {c!r} outside a literal")
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0 and stop_at_zero:
                    return Scan(i + 1, 0, hostile)
            i += 1
    return Scan(-1, depth, hostile)


def _skip_raw(text: str, i: int) -> tuple[int, str]:
    """Past the raw string literal whose `"` is text[i]: R"delim( ... )delim"."""
    delimiter = _RAW_DELIMITER.match(text, i + 1).group(0)
    open_paren = i + 1 + len(delimiter)
    if text[open_paren:open_paren + 1] != "(":
        return len(text), "a malformed raw string"
    end = text.find(")" + delimiter + '"', open_paren)
    return (len(text), "an unterminated raw string") if end < 0 else (end + len(delimiter) + 2, "")


def _skip_quoted(text: str, i: int, quote: str) -> tuple[int, str]:
    """Past the string or character literal that opens at text[i]; an unterminated one is hostile (g++
    may only warn and read the rest of the line differently)."""
    j = i + 1
    while j < len(text) and text[j] != quote and text[j] != "\n":
        j += 2 if text[j] == "\\" else 1
    if j >= len(text) or text[j] != quote:
        return min(j, len(text)), "an unterminated literal"
    return j + 1, ""


def _specifiers(node) -> set[str]:
    return {c.text.decode() for c in node.children
            if c.type in ("storage_class_specifier", "type_qualifier", "virtual_specifier")}


def _declarator_name(node):
    """The function_declarator's own declarator (identifier, qualified_identifier, operator_name, ...)."""
    declarator = node.child_by_field_name("declarator")
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    return declarator.child_by_field_name("declarator") if declarator is not None else None


def _deduced_return(node) -> bool:
    kind = node.child_by_field_name("type")
    return (kind is not None and kind.text.decode() in ("auto", "decltype(auto)")
            and b"->" not in (node.child_by_field_name("declarator").text or b""))


def _rule(node, in_template: bool) -> str:
    """What the tests' unit does with a function definition: "declare" (its body becomes `;`), "keep" or
    "drop" (module docstring)."""
    name = _declarator_name(node)
    qualified = name is not None and name.type == "qualified_identifier"
    if in_template or _specifiers(node) & _KEEP_SPECIFIERS or (_deduced_return(node) and not qualified):
        return "keep"
    return "drop" if qualified else "declare"


def _extern_global(node, source: bytes) -> bytes | None:
    """`int memo[10] = {0}, n;` -> `extern int memo[10], n;` for a mutable global with external linkage; b""
    for a static data member's definition (the class declares it); None to keep anything else as it is
    (prototypes, constants, statics, `auto`)."""
    specifiers = _specifiers(node)
    declarators = node.children_by_field_name("declarator")
    kind = node.child_by_field_name("type")
    if (specifiers & {"static", "extern", "constexpr", "thread_local", "inline"} or not declarators
            or (kind is not None and kind.text == b"auto")):
        return None
    names = []
    for d in declarators:
        inner = d.child_by_field_name("declarator") if d.type == "init_declarator" else d
        if inner is None or b"(" in inner.text:  # a prototype, a function pointer or a constructor call
            return None
        if inner.type == "qualified_identifier":
            return b""
        const_pointer = inner.type == "pointer_declarator" and any(
            c.type == "type_qualifier" and c.text == b"const" for c in inner.children)
        if const_pointer or ("const" in specifiers and inner.type != "pointer_declarator"):
            return None  # a const object has internal linkage: each unit keeps its own
        names.append(inner.text)
    return b"extern " + source[node.start_byte:declarators[0].start_byte] + b", ".join(names) + b";"


@dataclass(frozen=True)
class PromptForTests:
    """The prompt as the tests' unit sees it; `body_error` says why the completion's body is not in it
    although the function to complete needs its body there."""

    text: str
    body_error: str = ""


def prompt_for_tests(prompt: str, continuation: str | None = None) -> PromptForTests:
    """The prompt for the tests' unit (module docstring). `continuation` is the text after the prompt, up to
    and past the function's closing brace; without it (a task checked at load) the function to complete is
    declared only. Only the prompt (the task author's) is parsed; the completion reaches the unit solely
    through `scan_braces`, so no completion can make this raise."""
    scan = scan_braces(prompt, stop_at_zero=False)
    if scan.depth < 1:
        raise ValueError("field 'prompt' must end inside the body of the function to complete")
    closers = "}\n" * (scan.depth - 1)  # namespaces and `extern "C" {` blocks the prompt left open
    tail = "\n}\n" + closers  # closes the function (an empty body for now) and those scopes
    closed = (prompt + tail).encode()
    prompt_end = len(prompt.encode())
    tree = _cpp_parser().parse(closed)
    edits: list[tuple[int, int, bytes]] = []
    final: list = []  # (node, body node, rule) of the function to complete, once found

    def visit(node, in_template: bool) -> None:
        for child in node.children:
            if child.type == "function_definition" and child.child_by_field_name("body") is not None:
                body_node = child.child_by_field_name("body")
                rule = _rule(child, in_template)
                if body_node.start_byte < prompt_end <= body_node.end_byte:
                    final.append((child, body_node, rule))
                elif rule != "keep":
                    edits.append(_edit(child, body_node, rule))
            elif child.type == "declaration" and not in_template and node.type != "linkage_specification":
                # (`extern "C" int x;` without braces is a declaration already)
                replacement = _extern_global(child, closed)
                if replacement is not None:
                    edits.append((child.start_byte, child.end_byte, replacement))
            elif child.type in _SCOPES:
                visit(child, in_template or child.type == "template_declaration")

    visit(tree.root_node, False)
    if not final:
        raise ValueError("field 'prompt' must end inside the body of a function at namespace scope (not a "
                         "lambda, not inside a comment; a function defined inside a class body is not supported: "
                         "define it after the class, `T Class::name(...) {`)")
    (node, body_node, rule), = final[-1:]
    body, body_error = "", ""
    if rule == "keep" and continuation is not None:
        continuation = continuation.replace("\r\n", "\n")  # as g++ reads line ends; a lone \r stays hostile
        rest = scan_braces(continuation, 1)
        if rest.hostile:
            body_error = f"the completion's body holds {rest.hostile}"
        elif rest.close < 0:
            body_error = "the completion does not close the function"
        else:
            body = continuation[:rest.close]
    if not body:  # declared only: the solution's definition is the one linked (or the #error below says why)
        edits.append(_edit(node, body_node, "declare" if rule != "drop" else rule))
    source = closed
    for start, end, replacement in sorted(edits, reverse=True):
        before = source[:start].rstrip() if replacement == b";" else source[:start]
        source = before + replacement + source[end:]
    text = source.decode()
    if body:  # the empty body the prompt was parsed with becomes the completion's proven one
        text = text[: len(text) - len(tail)] + body + "\n" + closers
    elif body_error:
        text += f'\n#error "crucible: {body_error}, so it cannot be compiled with the tests"\n'
    return PromptForTests(text, body_error)


def _edit(node, body_node, rule: str) -> tuple[int, int, bytes]:
    """The edit of a "declare" (body -> `;`) or "drop" (the whole definition) rule; "keep" needs none."""
    if rule == "declare":
        return body_node.start_byte, body_node.end_byte, b";"
    return node.start_byte, node.end_byte, b""


def declarations_from_prompt(prompt: str) -> str:
    """The prompt for the tests' unit with the function to complete declared only."""
    return prompt_for_tests(prompt).text
