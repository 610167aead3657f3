from sft.cpp_parse import extract_definitions
from tests.unit.sft.conftest import SHAPES_CPP, SHAPES_H, SUM_BUGGY


def _summary(source: str, path: str) -> list[tuple]:
    return [(d.kind, d.qualified_name, d.start_line, d.end_line, d.signature)
            for d in extract_definitions(source, path)]


def test_header_definitions_exact():
    assert _summary(SHAPES_H, "shapes.h") == [
        ("namespace", "geo", 4, 31, "namespace geo"),
        ("enum", "geo::Color", 6, 6, "enum class Color"),
        ("class", "geo::Shape", 8, 13, "class Shape"),
        ("function", "geo::Shape::name", 12, 12, "const char* name() const"),
        ("class", "geo::Circle", 15, 22, "class Circle : public Shape"),
        ("function", "geo::Circle::Circle", 17, 17, "explicit Circle(double r) : r_(r)"),
        ("function", "geo::maxof", 24, 27, "template <typename T> T maxof(T a, T b)"),
    ]


def test_header_details():
    by_name = {d.qualified_name: d for d in extract_definitions(SHAPES_H, "shapes.h")}
    assert by_name["geo::Color"].enumerators == ("Red", "Green", "Blue")
    assert by_name["geo::Shape"].methods == ("~Shape", "area", "name")
    assert by_name["geo::Shape"].bases == ()
    assert by_name["geo::Circle"].bases == ("Shape",)
    assert by_name["geo::Circle"].methods == ("Circle", "area")
    assert by_name["geo::Shape::name"].return_type == "const char*"
    assert by_name["geo::Circle::Circle"].return_type is None
    maxof = by_name["geo::maxof"]
    assert (maxof.template_params, maxof.return_type, maxof.params) == ("<typename T>", "T", "(T a, T b)")
    assert maxof.text.startswith("template <typename T>\nT maxof") and maxof.text.endswith("}")
    assert all(d.path == "shapes.h" and d.doc is None for d in by_name.values())


def test_out_of_class_method_and_doc_comment():
    defs = extract_definitions(SHAPES_CPP, "shapes.cpp")
    assert [(d.kind, d.name, d.qualified_name, d.start_line) for d in defs] == [
        ("namespace", "geo", "geo", 3), ("function", "Circle::area", "geo::Circle::area", 5),
        ("function", "sum", "geo::sum", 8)]
    total = defs[2]
    assert total.doc == "Sum of the first n elements of v."
    assert total.text == SUM_BUGGY
    assert (total.return_type, total.params) == ("int", "(const std::vector<int>& v, int n)")


def test_trailing_comment_is_not_a_doc_and_block_comment_is():
    source = "int x = 1; // counter\nint f() { return x; }\n/**\n * Twice g.\n */\nint g() { return 2; }\n"
    defs = {d.name: d for d in extract_definitions(source, "a.cpp")}
    assert defs["f"].doc is None
    assert defs["g"].doc == "Twice g."


def test_struct_template_class_and_broken_code():
    source = ("template <class T> struct Box : Base<T> { T get() const { return v; } T v; };\n"
              "void broken( { \n")
    defs = extract_definitions(source, "b.hpp")
    box = defs[0]
    assert (box.kind, box.name, box.bases, box.methods, box.template_params) == (
        "struct", "Box", ("Base<T>",), ("get",), "<class T>")
    assert [d.name for d in defs] == ["Box", "get"]  # the broken function is skipped
