"""A small synthetic C++ git repository: three commits (import, "Fix off-by-one in sum", a tweak)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SHAPES_H = """\
#pragma once
#include <vector>

namespace geo {

enum class Color { Red, Green, Blue };

class Shape {
 public:
  virtual ~Shape() = default;
  virtual double area() const = 0;
  const char* name() const { return "shape"; }
};

class Circle : public Shape {
 public:
  explicit Circle(double r) : r_(r) {}
  double area() const override;

 private:
  double r_;
};

template <typename T>
T maxof(T a, T b) {
  return a > b ? a : b;
}

int sum(const std::vector<int>& v, int n);

}  // namespace geo
"""

SUM_BUGGY = """\
int sum(const std::vector<int>& v, int n) {
  int total = 0;
  for (int i = 0; i <= n; ++i) total += v[i];
  return total;
}"""
SUM_FIXED = SUM_BUGGY.replace("i <= n", "i < n")
AREA = "double Circle::area() const { return 3.14 * r_ * r_; }"

SHAPES_CPP = f"""\
#include "shapes.h"

namespace geo {{

{AREA}

/// Sum of the first n elements of v.
{SUM_BUGGY}

}}  // namespace geo
"""

MAIN_CPP = """\
#include "shapes.h"

int main() { return geo::maxof(1, 2) == 2 ? 0 : 1; }
"""

CMAKE = """\
cmake_minimum_required(VERSION 3.16)
project(geo CXX)
add_executable(app main.cpp shapes.cpp)
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
                    "-C", str(repo), *args], check=True, capture_output=True)


def _commit(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)


@pytest.fixture()
def cpp_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _commit(repo, {"shapes.h": SHAPES_H, "shapes.cpp": SHAPES_CPP, "main.cpp": MAIN_CPP,
                   "CMakeLists.txt": CMAKE}, "Initial import")
    _commit(repo, {"shapes.cpp": SHAPES_CPP.replace(SUM_BUGGY, SUM_FIXED)}, "Fix off-by-one in sum")
    _commit(repo, {"shapes.cpp": SHAPES_CPP.replace(SUM_BUGGY, SUM_FIXED).replace("3.14", "3.14159")},
            "Use a more precise pi")
    return repo
