"""The compression contract: one table of method objects, each with a name, kinds, frozen options and one
verb; the commands read their methods from it; lineage lookups and distillation's wiring."""

from __future__ import annotations

import argparse
import dataclasses
import re
from types import SimpleNamespace

import pytest
import torch

from maas.compress.method import Method, Options, Result
from maas.compress.methods import METHODS, compress, find, names
from maas.errors import InvalidRequestError
from maas.models.families import KINDS


def test_every_method_is_one_object_with_kinds_and_frozen_options():
    seen = set()
    for m in METHODS:
        assert isinstance(m, Method) and m.about and set(m.kinds) <= set(KINDS), m
        assert dataclasses.is_dataclass(m.options_type) and m.options_type.__dataclass_params__.frozen
        for kind in m.kinds:
            assert (m.verb, m.name, kind) not in seen, m  # a (command, name, kind) has one method
            seen.add((m.verb, m.name, kind))
    assert set(names("quantize")) >= {"int8", "int4", "gptq", "float32"}
    assert names("prune") == ("magnitude", "wanda", "2:4", "structured")
    assert names("distill") == ("distill",)
    assert find("quantize", "int8", "tensor") is not find("quantize", "int8", "llm")  # the tensor variant


def test_the_contract_has_no_any_in_its_public_signatures():
    for obj in (Method.__init__, Method.apply, Method.options, Method.unused, Result, compress, find):
        for (
            name,
            hint,
        ) in obj.__annotations__.items():  # strings: the module's `from __future__ import annotations`
            assert not re.search(r"\bAny\b", str(hint)), (obj, name, hint)


def test_the_commands_read_their_methods_from_the_table():
    from maas.cli import distill, prune, quantize

    for verb, module in (("quantize", quantize), ("prune", prune), ("distill", distill)):
        p = argparse.ArgumentParser()
        module.add_parser(p.add_subparsers())
        sub = p._subparsers._group_actions[0].choices[verb]  # type: ignore[union-attr]
        action = next(a for a in sub._actions if "--method" in a.option_strings)
        assert action.choices is None  # validated once, by the table
        text = sub.format_help()
        assert all(n in text for n in names(verb)), text


def test_unknown_and_misapplied_methods_are_refused_with_the_choices():
    with pytest.raises(InvalidRequestError, match=r"unknown quantize method 'int3' \(choose from int8, int4"):
        find("quantize", "int3", "llm")
    with pytest.raises(InvalidRequestError, match="'gptq' applies to llm and embedding models, not tensor"):
        find("quantize", "gptq", "tensor")
    with pytest.raises(InvalidRequestError, match="measures the layers' inputs: give --calibration FILE"):
        find("quantize", "gptq", "llm").options()
    with pytest.raises(InvalidRequestError, match="int8 takes no --calibration"):
        find("quantize", "int8", "tensor").options(calibration="x.txt")


def test_training_data_is_found_through_the_lineage(tiny_registry, tmp_path):
    from maas.compress.calibration import calibration_rows, training_record

    reg, _ = tiny_registry
    config = {"name": "tiny", "data": {"kind": "csv"}, "base_dir": str(tmp_path)}
    reg.import_path(reg.path_for("tiny:base"), "tiny:trained", operation="train",
                    metrics={"lineage": {"config": config}})  # fmt: skip
    compress("quantize", "tiny:trained", "int8", "tiny:trained-int8")
    record = training_record("tiny:trained-int8")  # the quantized copy's parent was trained
    assert record.config == {"name": "tiny", "data": {"kind": "csv"}} and record.base_dir == str(tmp_path)
    x = torch.arange(12.0).reshape(6, 2)
    std = {"standardize": {"mean": [1.0, 2.0], "std": [2.0, 4.0]}}
    data = SimpleNamespace(task="classify", train=SimpleNamespace(x=x, y=None), test=None, info=std)
    rows = calibration_rows("tiny:trained-int8", lambda r: data, n=4)
    assert (
        rows is not None
        and rows.tolist() == (x[:4] * torch.tensor([2.0, 4.0]) + torch.tensor([1.0, 2.0])).tolist()
    )
    assert calibration_rows("tiny:base", lambda r: data) is None  # no trained ancestor


def test_distill_is_a_method_whose_training_loop_is_wired_in(tiny_registry, tmp_path):
    from maas.compress.distill import DistillOptions

    reg, _ = tiny_registry
    student = tmp_path / "student.yaml"
    calls = []

    def trainer(teacher: str, options: DistillOptions):
        calls.append((teacher, options))
        return reg.import_path(reg.path_for("tiny:base"), "tiny-small:kd", parent="tiny:base", operation="distill",
                               parameters={"teacher": teacher, "alpha": options.alpha})  # fmt: skip

    info = compress(
        "distill", "tiny:base", "distill", services={"trainer": trainer}, student=student, alpha=0.7
    )
    assert (info.name, info.tag, info.operation, info.parent) == ("tiny-small", "kd", "distill", "tiny:base")
    assert calls[0][0] == "tiny:base" and calls[0][1].alpha == 0.7 and calls[0][1].student == student
    with pytest.raises(InvalidRequestError, match="needs a training loop"):
        compress("distill", "tiny:base", "distill", student=student)
    with pytest.raises(InvalidRequestError, match="--alpha must be in"):
        find("distill", "distill", "llm").options(student=student, alpha=2.0)


def test_options_are_frozen_and_named_like_the_flags():
    o = find("quantize", "int4", "llm").options(group_size=64)
    assert isinstance(o, Options) and dataclasses.asdict(o)["group_size"] == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.group_size = 32  # type: ignore[misc]
