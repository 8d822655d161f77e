"""Device code names no ``triton.*`` host helper, so it compiles on every Triton it supports.

Triton's dependency scan (``DependenciesFinder``, run for a kernel's cache key before its
first compile) refuses any plain Python function a ``@triton.jit`` or ``constexpr_function``
body references. Whether ``triton.next_power_of_2`` or ``triton.cdiv`` is such a function
depends on the release: newer ones make them ``constexpr_function``s, Triton 3.6 does not, so a
body that calls one passes here (and in the interpreter) and fails on the GPU with "Unsupported
function referenced". The rule is checked on the source: device code reaches ``triton`` only
through ``triton.language``.
"""
import ast
import importlib
import inspect
import pkgutil
import textwrap

import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines

import pytest
import triton

DEVICE_DECORATORS = ("triton.jit", "triton.constexpr_function")


def _device_functions():
    """``(module name, function name, AST node)`` of every device function in ``nsa_kernels``
    (every module imports without the peers, so none escapes the scan)."""
    found = []
    for info in pkgutil.walk_packages(nk.__path__, nk.__name__ + "."):
        tree = ast.parse(inspect.getsource(importlib.import_module(info.name)))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                    ast.unparse(d).split("(")[0] in DEVICE_DECORATORS
                    for d in node.decorator_list):
                found.append((info.name, node.name, node))
    return found


def host_helpers_named(function_node):
    """The ``triton.X`` references in a function body (``X`` other than ``language``)."""
    body = ast.Module(body=function_node.body, type_ignores=[])
    return sorted({ast.unparse(n) for n in ast.walk(body)
                   if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                   and n.value.id == "triton" and n.attr != "language"})


DEVICE_FUNCTIONS = _device_functions()


def test_the_scan_finds_the_device_code():
    names = {(module.rsplit(".", 1)[-1], name) for module, name, _ in DEVICE_FUNCTIONS}
    assert ("tiles", "pages_per_tile") in names  # a constexpr_function
    assert ("prefill_paged", "prefill_paged_kernel") in names
    assert ("extend", "extend_metadata_kernel") in names
    assert len(DEVICE_FUNCTIONS) >= 20


@pytest.mark.parametrize("module,name,node", DEVICE_FUNCTIONS,
                         ids=[f"{m.rsplit('.', 1)[-1]}.{n}" for m, n, _ in DEVICE_FUNCTIONS])
def test_device_code_names_no_triton_host_helper(module, name, node):
    assert host_helpers_named(node) == [], (
        f"{module}.{name} references {host_helpers_named(node)} in device code; compute the "
        "value with plain arithmetic or pass it in as a constexpr")


def test_the_rule_catches_a_host_helper():
    source = textwrap.dedent('''
        @triton.constexpr_function
        def lanes(n):
            return triton.next_power_of_2(n)
    ''')
    node = ast.parse(source).body[0]
    assert host_helpers_named(node) == ["triton.next_power_of_2"]


@pytest.mark.parametrize("block_n,page_size", [(128, 64), (1024, 64), (1024, 48), (128, 96),
                                               (64, 64), (8192, 1), (1024, 1000), (128, 1024)])
def test_pages_per_tile_is_the_next_power_of_two(block_n, page_size):
    from nsa_kernels.modes import tiles

    fn = getattr(tiles.pages_per_tile, "fn", tiles.pages_per_tile)
    pages = -(-block_n // page_size)
    assert fn(block_n, page_size) == triton.next_power_of_2(pages)
