"""Synthetic bugs: mutation operators on the tree-sitter parse of a correct solution (issue 19's repair tasks).

Each operator makes one small, local change of the kind people make: an off-by-one loop bound, a flipped
comparison, a wrong arithmetic operator, a dropped guard, a variable left uninitialised, a wrong return
value, swapped call arguments. Only the part of the program at or after `start` (the completion, not the
prompt) is mutated. Whether a mutant is a bug is not decided here: the repair builder keeps only mutants that
the sandbox shows to fail (rewards.repair).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

OPERATORS = ("off-by-one", "flipped-comparison", "wrong-operator", "missing-check", "uninitialised",
             "wrong-return", "swapped-arguments")
_BOUND = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
_FLIP = {"<": ">=", ">": "<=", "<=": ">", ">=": "<", "==": "!=", "!=": "=="}
_ARITH = {"+": "-", "-": "+", "*": "+", "/": "*", "%": "/"}
_SCALARS = {"int", "long", "short", "unsigned", "signed", "double", "float", "char", "bool", "size_t",
            "int64_t", "uint64_t", "int32_t", "uint32_t", "long long", "long double", "unsigned int"}
_EXITS = ("return_statement", "break_statement", "continue_statement")


@dataclass(frozen=True)
class Mutant:
    operator: str  # one of OPERATORS
    text: str  # the whole mutated program
    line: int  # 1-based line of the change, counted from `start`'s line (the completion's first line is 1)
    before: str  # the code that was changed, as written
    after: str  # what it became ("" when deleted)
    description: str  # one sentence a person (or a REASONING block) can use: what is wrong and where


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter_cpp
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_cpp.language()))


def mutants(source: str, start: int = 0) -> list[Mutant]:
    """Every single-edit mutant of `source` whose edit lies at or after character `start`, in source order,
    without duplicates (nor the unchanged text). A source that does not parse cleanly gives none."""
    data = source.encode()
    begin = len(source[:start].encode())
    tree = _parser().parse(data)
    if tree.root_node.has_error:
        return []
    first_line = source[:start].count("\n")
    found: dict[str, Mutant] = {}

    def text(node) -> str:
        return data[node.start_byte:node.end_byte].decode()

    def add(operator: str, node_start: int, node_end: int, after: str, what: str) -> None:
        before = data[node_start:node_end].decode()
        mutated = (data[:node_start] + after.encode() + data[node_end:]).decode()
        if mutated == source or mutated in found:
            return
        line = data[:node_start].count(b"\n") - first_line + 1
        found[mutated] = Mutant(operator, mutated, line, before, after, f"line {line}: {what}")

    def visit(node, in_loop_condition: bool) -> None:
        if node.start_byte >= begin:
            _mutate(node, in_loop_condition)
        for i, child in enumerate(node.children):
            field = node.field_name_for_child(i)
            loop_cond = node.type == "for_statement" and field == "condition" or (
                in_loop_condition and node.type not in ("lambda_expression",))
            visit(child, loop_cond)

    def _mutate(node, in_loop_condition: bool) -> None:
        kind = node.type
        if kind == "binary_expression":
            op = node.child_by_field_name("operator")
            sym = text(op)
            if in_loop_condition and sym in _BOUND:
                add("off-by-one", op.start_byte, op.end_byte, _BOUND[sym],
                    f"the loop bound `{text(node)}` uses `{_BOUND[sym]}` instead of `{sym}`, one iteration off")
            elif sym in _FLIP:
                add("flipped-comparison", op.start_byte, op.end_byte, _FLIP[sym],
                    f"the comparison `{text(node)}` is inverted (`{_FLIP[sym]}` instead of `{sym}`)")
            elif sym in _ARITH:
                add("wrong-operator", op.start_byte, op.end_byte, _ARITH[sym],
                    f"`{text(node)}` uses `{_ARITH[sym]}` where `{sym}` is meant")
        elif kind == "if_statement" and node.child_by_field_name("alternative") is None:
            body = node.child_by_field_name("consequence")
            inner = [c for c in body.named_children if c.type != "comment"] if body.type == "compound_statement" \
                else [body]
            if len(inner) == 1 and inner[0].type in _EXITS:
                cond = node.child_by_field_name("condition")
                add("missing-check", node.start_byte, node.end_byte, "",
                    f"the guard `if {text(cond)} {text(inner[0])}` is missing, so that case falls through")
        elif kind == "declaration":
            type_text = " ".join(text(node.child_by_field_name("type")).split())
            for decl in node.named_children:
                value = decl.child_by_field_name("value") if decl.type == "init_declarator" else None
                name = decl.child_by_field_name("declarator") if value is not None else None
                if value is not None and type_text in _SCALARS and name is not None and name.type == "identifier":
                    add("uninitialised", name.start_byte, value.end_byte, text(name),
                        f"`{text(name)}` is declared without its initial value `{text(value)}` (read uninitialised)")
        elif kind == "return_statement":
            value = node.named_children[0] if node.named_children else None
            if value is not None and value.type in ("true", "false"):
                flipped = "false" if value.type == "true" else "true"
                add("wrong-return", value.start_byte, value.end_byte, flipped,
                    f"it returns `{flipped}` where `{text(value)}` is right")
            elif value is not None and value.type == "number_literal" and text(value).isdigit():
                wrong = str(int(text(value)) + 1)
                add("wrong-return", value.start_byte, value.end_byte, wrong,
                    f"it returns `{wrong}` where `{text(value)}` is right")
        elif kind == "call_expression":
            args = node.child_by_field_name("arguments")
            named = [a for a in args.named_children if a.type != "comment"] if args is not None else []
            if len(named) >= 2 and text(named[0]) != text(named[1]):
                a, b = named[0], named[1]
                swapped = text(b) + data[a.end_byte:b.start_byte].decode() + text(a)
                add("swapped-arguments", a.start_byte, b.end_byte, swapped,
                    f"the call `{text(node)}` passes its first two arguments in the wrong order")

    visit(tree.root_node, False)
    return list(found.values())
