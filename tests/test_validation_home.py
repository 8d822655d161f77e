"""validation is one package: each primitive has one home, and every entry point uses it."""
import importlib

import nsa_kernels  # noqa: F401  (sets the interpreter up before triton)
from nsa_kernels.validation import core, extend, modes

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("old", ["nsa_kernels.modes.checks", "nsa_kernels.modes.extend_checks"])
def test_no_second_home_for_checks(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def _parsers():
    return {
        "core": lambda v: core.as_index("x", v, minimum=0),
        "modes": lambda v: modes.as_int("x", v, minimum=0),
        "extend": lambda v: extend.check_int_param("x", v, 0, 2**31 - 1),
    }


@pytest.mark.parametrize("parser", ["core", "modes", "extend"])
@pytest.mark.parametrize("value", [True, np.bool_(False), torch.tensor(3), 2.0, "3"])
def test_every_int_parser_refuses_non_integers(parser, value):
    # A 0-d tensor has __index__: accepting it would read the device (a hidden sync).
    with pytest.raises(TypeError, match="^x must be "):
        _parsers()[parser](value)


@pytest.mark.parametrize("parser", ["core", "modes", "extend"])
def test_every_int_parser_accepts_numpy_ints(parser):
    assert _parsers()[parser](np.int64(7)) == 7


def test_first_overlap_names_output_then_other():
    spans = {"a": (0, 8), "b": (8, 16), "c": (4, 12), "x": (100, 104)}
    assert core.first_overlap([("a", spans["a"]), ("b", spans["b"])], [("x", spans["x"])]) is None
    assert core.first_overlap([("a", spans["a"]), ("b", spans["b"])], [("c", spans["c"])]) == (
        "a",
        "c",
    )
    assert core.first_overlap([("b", spans["b"])], [("c", spans["c"]), ("a", spans["a"])]) == (
        "b",
        "c",
    )
    # inputs may overlap each other; empty tensors (None spans) never overlap
    assert core.first_overlap([("a", None)], [("b", spans["b"]), ("c", spans["c"])]) is None


def test_byte_range_counts_strided_gaps():
    base = torch.zeros(4, 6, dtype=torch.int32)
    view = base[:, 1:3]  # rows of 2 entries at stride 6
    low, high = core.byte_range(view)
    assert low == view.data_ptr()
    assert high - low == ((4 - 1) * 6 + 2) * 4
    assert core.byte_range(base[:0]) is None


@pytest.mark.parametrize("check", ["core", "modes", "extend"])
def test_every_overlap_check_sees_a_strided_alias(check):
    base = torch.zeros(4, 6, dtype=torch.int32)
    out, inp = base[:, 0], base[3, 1:]  # out's last entry is at [3, 0], next to inp's first
    inp_hit = base[2, 1:]  # lies between out's entries [2, 0] and [3, 0]
    run = {
        "core": lambda i: core.check_no_overlap({"out": out}, {"inp": i}),
        "modes": lambda i: modes.no_overlap({"out": out}, {"inp": i}),
        "extend": lambda i: extend.check_no_overlap({"inp": i}, {"out": out}),
    }[check]
    run(inp)  # past out's last byte
    with pytest.raises(ValueError, match="out"):
        run(inp_hit)
