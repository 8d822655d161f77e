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


def test_one_integer_parser():
    # The modes' and extend's own parsers are gone: every entry point parses through core.
    assert not hasattr(modes, "as_int") and not hasattr(extend, "check_int_param")
    assert modes.as_index is core.as_index and extend.as_index is core.as_index


@pytest.mark.parametrize("value", [True, np.bool_(False), torch.tensor(3), 2.0, "3"])
def test_the_int_parser_refuses_non_integers(value):
    # A 0-d tensor has __index__: accepting it would read the device (a hidden sync).
    with pytest.raises(TypeError, match="^x must be an int, got "):
        core.as_index("x", value, minimum=0)


def test_the_int_parser_accepts_numpy_ints_and_words_its_bounds():
    assert core.as_index("x", np.int64(7), minimum=0) == 7
    with pytest.raises(ValueError, match=r"^x must lie in \[1, 9\], got 10$"):
        core.as_index("x", 10, minimum=1, maximum=9)
    with pytest.raises(ValueError, match="^x must be >= 1, got 0$"):
        core.as_index("x", 0, minimum=1)


def test_one_overlap_check_and_one_host_lengths():
    # (outputs, inputs) and (extend_seq_lens, seq_lens, mirrors...): core's, everywhere.
    assert not hasattr(modes, "no_overlap")
    assert extend.check_no_overlap is core.check_no_overlap
    assert extend.host_lengths is core.host_lengths


def test_validation_modes_does_not_import_the_kernels():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(modes))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert all("modes" not in (m or "") and "tiles" not in (m or "") for m in imported), imported


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


def test_the_overlap_check_sees_a_strided_alias():
    base = torch.zeros(4, 6, dtype=torch.int32)
    out, inp = base[:, 0], base[3, 1:]  # out's last entry is at [3, 0], next to inp's first
    inp_hit = base[2, 1:]  # lies between out's entries [2, 0] and [3, 0]

    def run(i):
        core.check_no_overlap({"out": out}, {"inp": i})

    run(inp)  # past out's last byte
    with pytest.raises(ValueError, match="out"):
        run(inp_hit)
