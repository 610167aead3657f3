"""Definitions in C++ source, found with tree-sitter-cpp (never regex): functions (free functions, methods
defined in a class body, out-of-class definitions such as `Foo::bar`), classes/structs with their bases and
method names, namespaces, enums with their enumerators; a template wraps any of them and is recorded as
`template_params` on the definition it wraps. Each carries its location, signature, text and doc comment.

Definitions whose subtree contains a parse error are skipped (macro-heavy code parses badly), except
namespaces, whose name and location stay reliable and whose contents are visited regardless."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_FUNCTION_WRAPPERS = ("pointer_declarator", "reference_declarator")
_CLASS_TYPES = {"class_specifier": "class", "struct_specifier": "struct"}
_SPECIFIERS = {"virtual", "static", "inline", "explicit", "constexpr", "consteval", "friend", "extern"}
_CONTAINERS = ("preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef",
               "linkage_specification", "declaration_list")


@dataclass(frozen=True)
class Definition:
    kind: str  # "function" | "class" | "struct" | "namespace" | "enum"
    name: str  # as written, e.g. "area" or "Circle::area"
    qualified_name: str  # with the enclosing namespaces and classes, e.g. "geo::Circle::area"
    path: str
    start_line: int  # 1-based, inclusive; includes a `template <...>` prefix
    end_line: int
    signature: str  # the text before the body's `{`, whitespace-normalised
    text: str
    doc: str | None = None  # the comment block immediately above, markers stripped
    template_params: str | None = None  # e.g. "<typename T>"
    return_type: str | None = None  # functions only; None for constructors/destructors
    params: str | None = None  # functions only: the parameter list, e.g. "(int a, int b)"
    bases: tuple[str, ...] = ()  # classes: base classes as written, e.g. ("Shape",)
    methods: tuple[str, ...] = ()  # classes: member functions declared or defined in the body
    enumerators: tuple[str, ...] = ()  # enums


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter_cpp
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_cpp.language()))


def _norm(text: str) -> str:
    return " ".join(text.split())


def _strip_comment(text: str) -> str:
    text = text.strip()
    if text.startswith("/*"):
        text = text[2:].removesuffix("*/")
        lines = [re.sub(r"^\s*\*+ ?", "", line) if line.strip().startswith("*") else line.strip()
                 for line in text.splitlines()]
    else:
        lines = [re.sub(r"^//[/!]?<? ?", "", line.strip()) for line in text.splitlines()]
    lines = [line.lstrip("*!").rstrip() for line in lines]
    return "\n".join(line.strip() for line in lines).strip()


class _Extractor:
    def __init__(self, source: bytes, path: str):
        self.source, self.path = source, path
        self.found: list[Definition] = []

    def text(self, node, start: int | None = None, end: int | None = None) -> str:
        return self.source[node.start_byte if start is None else start:
                           node.end_byte if end is None else end].decode("utf-8", errors="replace")

    def doc(self, node) -> str | None:
        comments = []
        current, row = node.prev_sibling, node.start_point.row
        while current is not None and current.type == "comment" and current.end_point.row >= row - 1:
            before = current.prev_sibling
            if (before is not None and before.type != "comment"
                    and before.end_point.row == current.start_point.row):
                break  # a trailing comment of the previous line's code
            comments.append(current)
            row, current = current.start_point.row, before
        doc = "\n".join(_strip_comment(self.text(c)) for c in reversed(comments)).strip()
        return doc or None

    def visit(self, node, scope: tuple[str, ...]) -> None:
        for child in node.named_children:
            self.definition(child, child, scope, None)

    def definition(self, node, outer, scope: tuple[str, ...], template: str | None) -> None:
        """`outer` is the node that carries the location and doc (the template_declaration when wrapped)."""
        kind = node.type
        if kind == "template_declaration":
            params = node.child_by_field_name("parameters")
            inner = [c for c in node.named_children if c != params]
            if inner:
                self.definition(inner[-1], outer, scope, self.text(params) if params else "<>")
        elif kind == "namespace_definition":
            name_node, body = node.child_by_field_name("name"), node.child_by_field_name("body")
            name = self.text(name_node) if name_node else ""
            if name:
                self.emit("namespace", name, scope, node, outer, body, template)
            if body is not None:
                self.visit(body, scope + tuple(name.split("::")) if name else scope)
        elif kind in _CONTAINERS:
            self.visit(node, scope)
        elif kind == "function_definition":
            self.function(node, outer, scope, template)
        elif kind in _CLASS_TYPES or kind == "enum_specifier":
            self.type_definition(node, outer, scope, template)
        elif kind in ("declaration", "field_declaration"):  # `struct S {...} s;`
            type_node = node.child_by_field_name("type")
            if type_node is not None and type_node.type in (*_CLASS_TYPES, "enum_specifier"):
                self.type_definition(type_node, outer, scope, template)

    def emit(self, kind: str, name: str, scope: tuple[str, ...], node, outer, body, template: str | None,
             **extra) -> None:
        end = body.start_byte if body is not None else node.end_byte
        self.found.append(Definition(
            kind=kind, name=name, qualified_name="::".join((*scope, name)), path=self.path,
            start_line=outer.start_point.row + 1, end_line=outer.end_point.row + 1,
            signature=_norm(self.text(outer, end=end)), text=self.text(outer), doc=self.doc(outer),
            template_params=template, **extra))

    def function(self, node, outer, scope: tuple[str, ...], template: str | None) -> None:
        body = node.child_by_field_name("body")
        declarator = _function_declarator(node.child_by_field_name("declarator"))
        if body is None or declarator is None or outer.has_error:
            return
        name_node = declarator.child_by_field_name("declarator")
        params = declarator.child_by_field_name("parameters")
        # Everything before the name, less specifiers: keeps `const` in `const char* name()`.
        words = _norm(self.text(node, end=name_node.start_byte)).split(" ")
        while words and words[0] in _SPECIFIERS:
            words.pop(0)
        return_type = " ".join(words)
        self.emit("function", _norm(self.text(name_node)), scope, node, outer, body, template,
                  return_type=return_type or None, params=_norm(self.text(params)) if params else "()")

    def type_definition(self, node, outer, scope: tuple[str, ...], template: str | None) -> None:
        name_node, body = node.child_by_field_name("name"), node.child_by_field_name("body")
        if name_node is None or body is None or outer.has_error:
            return  # a forward declaration, an anonymous type or a broken parse
        name = self.text(name_node)
        if node.type == "enum_specifier":
            enumerators = tuple(self.text(e.child_by_field_name("name")) for e in body.named_children
                                if e.type == "enumerator")
            self.emit("enum", name, scope, node, outer, body, template, enumerators=enumerators)
            return
        bases = tuple(_norm(self.text(c)) for clause in node.named_children
                      if clause.type == "base_class_clause"
                      for c in clause.named_children if c.type != "access_specifier")
        self.emit(_CLASS_TYPES[node.type], name, scope, node, outer, body, template, bases=bases,
                  methods=self.member_functions(body))
        inner_scope = scope + (name,)
        for member in body.named_children:
            if member.type in ("function_definition", "template_declaration", *_CLASS_TYPES, "enum_specifier",
                               "field_declaration", "declaration"):
                self.definition(member, member, inner_scope, None)

    def member_functions(self, body) -> tuple[str, ...]:
        names: list[str] = []
        for member in body.named_children:
            if member.type == "template_declaration" and member.named_children:
                member = member.named_children[-1]
            if member.type in ("function_definition", "field_declaration", "declaration"):
                declarator = _function_declarator(member.child_by_field_name("declarator"))
                if declarator is not None and declarator.child_by_field_name("declarator") is not None:
                    names.append(_norm(self.text(declarator.child_by_field_name("declarator"))))
        return tuple(dict.fromkeys(names))


def _function_declarator(node):
    while node is not None and node.type in _FUNCTION_WRAPPERS:
        inner = node.child_by_field_name("declarator")
        node = inner or (node.named_children[-1] if node.named_children else None)
    return node if node is not None and node.type == "function_declarator" else None


def extract_definitions(source: str, path: str) -> list[Definition]:
    """All definitions in `source` (the contents of `path`), in source order (outer before inner)."""
    data = source.encode("utf-8", errors="surrogateescape")
    extractor = _Extractor(data, path)
    extractor.visit(_parser().parse(data).root_node, ())
    return sorted(extractor.found, key=lambda d: (d.start_line, -d.end_line))
