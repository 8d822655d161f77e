"""SGLang's per-step fused-copy fallback lines are counted, not printed; other output passes."""
import collections
import logging
import sys
import types

from nsa_kernels.peers import sglang_messages


def _fake_sglang_module(monkeypatch, name):
    module = types.ModuleType(name)
    exec("def step(text):\n    print(text)\n", module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_fallback_prints_and_logs_are_counted_and_others_pass(monkeypatch, capsys, caplog):
    backend = _fake_sglang_module(monkeypatch, sglang_messages.PRINTING_MODULES[0])
    logger = logging.getLogger(sglang_messages.LOGGER)
    line = ("Warning: Fused metadata copy kernel not available, falling back to individual "
            "copies.")
    with caplog.at_level(logging.ERROR, logger=sglang_messages.LOGGER):
        with sglang_messages.counted() as messages:
            for _ in range(3):
                backend.step(line)
                logger.error("Failed to compile JIT fused metadata copy kernel (forward_mode=0,"
                             " has_real_page_table=True, has_flashmla=False): No module named x")
            backend.step("another line")
            logger.error("another error")
    out = capsys.readouterr().out
    assert line not in out and "another line" in out
    assert [r.getMessage() for r in caplog.records] == ["another error"]
    assert messages == {
        "Warning: Fused metadata copy kernel not available": 3,
        "Failed to compile JIT fused metadata copy kernel (forward_mode=0, "
        "has_real_page_table=True, has_flashmla=False)": 3}
    assert "3 x" in sglang_messages.summary(messages)


def test_everything_is_restored_on_exit(monkeypatch, capsys):
    backend = _fake_sglang_module(monkeypatch, sglang_messages.PRINTING_MODULES[1])
    logger = logging.getLogger(sglang_messages.LOGGER)
    filters = list(logger.filters)
    with sglang_messages.counted():
        assert "print" in backend.__dict__
    assert "print" not in backend.__dict__ and logger.filters == filters
    backend.step("Warning: Fused metadata copy kernel not available, falling back")
    assert "Warning: Fused metadata copy kernel" in capsys.readouterr().out


def test_no_messages_no_summary():
    assert sglang_messages.summary(collections.Counter()) is None
