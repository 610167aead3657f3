import json

import pytest

from sft.__main__ import main
from sft.dataset import DataConfig, build_dataset, collect_samples, deduplicate, split_by_file
from sft.samples import Sample


def _sample(i: int, path: str, kind: str = "qa") -> Sample:
    return Sample(kind, f"q{i}", "", f"a{i}", path)


def test_alpaca_and_chat_formats():
    s = Sample("qa", "Fix this", "int f();", "int f() {}", "a.cpp", {"x": 1})
    assert s.to_alpaca() == {"instruction": "Fix this", "input": "int f();", "output": "int f() {}",
                             "kind": "qa", "source_file": "a.cpp"}
    assert s.to_chat()["messages"] == [{"role": "user", "content": "Fix this\n\nint f();"},
                                       {"role": "assistant", "content": "int f() {}"}]
    no_input = Sample("qa", "Q", "", "A", "a.cpp").to_chat(system="You write C++.")
    assert no_input["messages"] == [{"role": "system", "content": "You write C++."},
                                    {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def test_deduplicate_on_instruction_input_output():
    a = Sample("qa", "q", "", "a", "x.cpp")
    samples = [a, Sample("qa", "q", "", "a", "y.cpp", {"other": 1}), Sample("qa", "q", "i", "a", "x.cpp")]
    assert deduplicate(samples) == [a, samples[2]]


def test_split_by_file_no_leak_and_deterministic():
    samples = [_sample(i, f"f{i % 40}.cpp") for i in range(400)]
    train, eval_ = split_by_file(samples, 0.05, seed=0)
    assert len(train) + len(eval_) == 400 and eval_
    assert not {s.source_file for s in train} & {s.source_file for s in eval_}
    assert split_by_file(list(reversed(samples)), 0.05, seed=0)[1] == list(reversed(eval_))
    assert split_by_file(samples, 0.05, seed=1) != (train, eval_)
    two = [_sample(0, "a.cpp"), _sample(1, "b.cpp")]
    assert [len(side) for side in split_by_file(two, 0.05, 0)] == [1, 1]
    assert split_by_file([_sample(0, "a.cpp")], 0.05, 0) == ([_sample(0, "a.cpp")], [])


def test_build_dataset_on_repo(cpp_repo, tmp_path):
    out = tmp_path / "out"
    stats = build_dataset(DataConfig(sources=[str(cpp_repo)], eval_fraction=0.3), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "eval.alpaca.jsonl", "eval.chat.jsonl", "stats.json", "train.alpaca.jsonl", "train.chat.jsonl"]
    assert json.loads((out / "stats.json").read_text()) == stats
    rows = {split: [json.loads(line) for line in (out / f"{split}.alpaca.jsonl").read_text().splitlines()]
            for split in ("train", "eval")}
    chats = {split: (out / f"{split}.chat.jsonl").read_text().splitlines() for split in ("train", "eval")}
    assert {k: len(v) for k, v in rows.items()} == stats["num_samples"]
    assert {k: len(v) for k, v in chats.items()} == stats["num_samples"]
    assert rows["eval"] and rows["train"]
    assert not {r["source_file"] for r in rows["train"]} & {r["source_file"] for r in rows["eval"]}
    every = rows["train"] + rows["eval"]
    kinds = {k: stats["kinds"]["train"].get(k, 0) + stats["kinds"]["eval"].get(k, 0)
             for k in ("file", "granular", "qa", "bugfix", "task")}
    assert kinds["file"] == 3 and kinds["bugfix"] == 1 and kinds["task"] == 0
    # Color, Shape, Shape::name, Circle, Circle::Circle, maxof (shapes.h); Circle::area, sum; main
    assert kinds["granular"] == 9
    assert sum(kinds.values()) == len(every)
    assert len({(r["instruction"], r["input"], r["output"]) for r in every}) == len(every)
    assert {r["source_file"] for r in every} == {f"{cpp_repo}/{p}" for p in (
        "shapes.h", "shapes.cpp", "main.cpp", "CMakeLists.txt")}
    assert set(stats["lengths"]) == {"file", "granular", "qa", "bugfix"}
    assert set(stats["lengths"]["qa"]["tokens"]) == {"p50", "p90", "max"}
    again = tmp_path / "again"
    build_dataset(DataConfig(sources=[str(cpp_repo)], eval_fraction=0.3), again)
    assert (again / "eval.chat.jsonl").read_bytes() == (out / "eval.chat.jsonl").read_bytes()


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        collect_samples(DataConfig(sources=[str(tmp_path / "nowhere")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no SFT samples"):
        build_dataset(DataConfig(sources=[str(tmp_path / "empty")]), tmp_path / "out")
    with pytest.raises(ValueError):
        DataConfig(kinds=["poems"])


def test_embedded_source_yields_task_samples():
    samples = collect_samples(DataConfig(kinds=["task"], max_files=1))
    assert samples and {s.kind for s in samples} == {"task"}
    assert all(s.source_file.startswith("embedded/tasks/") and s.output for s in samples)


def test_cli(cpp_repo, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"out_dir: {tmp_path / 'run'}\ndata: {{sources: [{cpp_repo}]}}\n")
    assert main(["data", "--config", str(config), "data.kinds=[qa,bugfix]"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train"] + summary["eval"] > 0 and summary["out_dir"] == str(tmp_path / "run" / "data")
    assert (tmp_path / "run" / "config.json").exists()
    assert main(["data", "--config", str(config), "data.bogus=1"]) == 2
    assert "error" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["data", "--config", str(config), f"data.sources=[{tmp_path / 'missing'}]"]) == 1
    assert "missing" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
