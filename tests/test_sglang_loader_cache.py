"""The loader that runs SGLang's files with their asserts stripped keeps a code cache of its
own: processes loading one tree at once (several checks side by side) must never read a cache
another is still writing, and a damaged cache is compiled again, not fatal."""
import importlib.util

import nsa_kernels  # noqa: F401  (first: picks the Triton mode)
from nsa_kernels.peers.sglang_backend import _StrippedAssertLoader


def _load(path):
    namespace = {}
    exec(_StrippedAssertLoader("probe", str(path)).get_code("probe"), namespace)
    return namespace


def test_asserts_stripped_and_cache_not_cpythons(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("assert False, 'stripped'\nVALUE = 7\n")
    assert _load(source)["VALUE"] == 7
    cache = importlib.util.cache_from_source(str(source), optimization="nsa")
    assert open(cache, "rb").read(8) != b""
    # CPython's own optimized cache name stays untouched: its header format differs
    assert not (tmp_path / "__pycache__" /
                importlib.util.cache_from_source(str(source), optimization=1)
                .rsplit("/", 1)[1]).exists()
    assert not list((tmp_path / "__pycache__").glob("*.tmp"))


def test_truncated_cache_is_compiled_again(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("VALUE = 11\n")
    _load(source)
    cache = importlib.util.cache_from_source(str(source), optimization="nsa")
    data = open(cache, "rb").read()
    with open(cache, "wb") as handle:  # a writer stopped half-way
        handle.write(data[:12])
    assert _load(source)["VALUE"] == 11
    assert open(cache, "rb").read() == data
