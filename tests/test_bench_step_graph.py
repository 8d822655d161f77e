"""bench.step's graph-replay column: each round's replays reduce to one sample, so every time
metric of a record is a number (median, p20, p80), never a list. CUDA graphs need a GPU: the
replay sampler is replaced by one that returns what the real one returns (a list per graph)."""
import nsa_kernels  # noqa: F401  (first: picks the Triton mode)
from nsa_kernels.bench import harness, step


def test_graph_us_is_a_number_per_record(monkeypatch):
    replays = iter(range(1, 1000))
    monkeypatch.setattr(harness, "_graph_samples", lambda graphs, iters, calls: {
        name: [float(next(replays)) for _ in range(5)] for name in graphs})
    monkeypatch.setattr(harness, "eager_us", lambda fn, iters: 2.0)
    entries = [dict(name="a", fn=lambda: None, graph=object()),
               dict(name="b", fn=lambda: None, graph=None)]
    times = step.time_entries(entries, dict(rounds=3, calls=4, eager=2, graph_calls=1))
    median, p20, p80 = times["a"]["graph_us"]
    assert all(isinstance(v, float) for v in (median, p20, p80))
    # the rounds' medians: of 1..5, 6..10 and 11..15 (only a has a graph)
    assert median == 8.0 and p20 <= median <= p80
    assert times["b"]["graph_us"] == (None, None, None)
    assert isinstance(times["a"]["host_us"][0], float)


def test_every_step_workload_has_a_judged_metric_on_a_gpu(monkeypatch):
    """The step's workloads that are not forward-mode specs (MTP, eager decode, extend) are
    judged without a lookup in ``SPECS``, on a GPU as under the interpreter."""
    monkeypatch.setattr(harness, "ON_GPU", True)
    from nsa_kernels.bench import modes
    for workload, _config, mode, _next_n, _steps in step.CONFIGS:
        group = type("G", (), dict(mode=mode))()
        key = step.judged_metric(group)
        assert key == ("eager_us" if mode in ("extend", "extend_ragged", "eager_decode")
                       else "graph_us"), (workload, key)
        records = [dict(stage=s, workload=workload, interpreter=False, graph_us=2.0,
                        eager_us=3.0) for s in ("sglang_step", "nsa_installed",
                                                "empty_kernel", "bandwidth_floor")]
        out = modes.finish_point(records, key=key)
        assert out[1]["vs_sglang"] == 1.0 and out[1]["floor_us"] in (2.0, 3.0)
