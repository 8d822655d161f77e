"""What the notebooks show: numbers, Markdown tables as rendered, plots' labels, fill checks."""
import nsa_kernels as nk

import matplotlib

matplotlib.use("Agg")

from nsa_kernels.bench import checks, display, plots
from nsa_kernels.testing import lengths

import pytest
import torch


@pytest.mark.parametrize("value, text", [(707.23, "707 µs"), (48.14, "48.1 µs"), (4.567, "4.57 µs"),
                                         (0.04812, "0.0481 µs"), (12345.6, "12,346 µs"),
                                         (None, "–")])
def test_fmt_us(value, text):
    assert display.fmt_us(value) == text


def test_fmt_ratio_and_table_cells_share_the_formatter():
    assert display.fmt_ratio(3.2844) == "3.28×"
    assert display.fmt_ratio(15.04) == "15.0×"
    assert display.fmt(204.4) == display.fmt_us(204.4, unit=False) == "204"
    assert display.fmt(32) == "32"


def _rendered(markdown_text):
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return markdown2html_mistune(markdown_text)


def test_markdown_table_cells_render_literally():
    table = display.markdown_table(
        ["stage", "eager_us"],
        [["Triton dispatch + launch: kernel[grid](...)", 1.0], ["a|b *c* <d>", 2.0],
         ["`kernel[grid](x)` stays code", 3.0]])
    html = _rendered(table)
    assert "<a " not in html, html
    assert "kernel[grid](...)" in html
    assert "eager_us" in html and "<em>" not in html
    assert "a|b *c* &lt;d&gt;" in html
    assert "<code>kernel[grid](x)</code>" in html
    assert html.count("<tr>") == 4  # the header and three rows: no cell split by its "|"


def _draw(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _overlaps(labels, renderer):
    boxes = [t.get_window_extent(renderer) for t in labels if t.get_text()]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


def _records():
    rows = [("draft_extend", bs, 3 * bs) for bs in (1, 8, 32, 128, 512)]
    rows += [("prefill", 4, 4096), ("prefill", 4, 16384)]
    stages = ["empty_kernel", "python_baseline", "triton_inplace", "zero_sync"]
    return stages, [{"workload": w, "bs": b, "tokens": n, "stage": s, "eager_us": (i + 1) * b + 3.0,
                         "kernel_graph_us": 2.0 + i} for w, b, n in rows
                    for i, s in enumerate(stages)]


def test_stage_bars_labels_do_not_collide_and_read_as_words():
    stages, records = _records()
    fig = plots.stage_bars(records, "standard workloads", stages)
    ax = fig.axes[0]
    renderer = _draw(fig)
    assert not _overlaps(ax.get_xticklabels(), renderer)
    assert not _overlaps(ax.get_yticklabels(), renderer)
    assert "_us" not in ax.get_ylabel() and "eager latency per call (µs)" in ax.get_ylabel()
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and all("^" not in t and "$" not in t for t in ticks), ticks
    assert {"1", "10", "100"} & set(ticks) or {"5", "50", "500"} & set(ticks), ticks
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("metric", ["eager_us", "kernel_graph_us"])
def test_scaling_axes_are_plain_numbers_and_labelled(metric):
    stages, records = _records()
    draft = [r for r in records if r["workload"] == "draft_extend"]
    fig = plots.scaling(draft, stages, metric=metric, marks=[(32, "crossover")])
    ax = fig.axes[0]
    renderer = _draw(fig)
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()] == [
        "1",
        "8",
        "32",
        "128",
        "512",
    ]
    assert not _overlaps(ax.get_yticklabels(), renderer)
    assert plots.METRIC_LABELS[metric] in ax.get_ylabel()
    assert ax.get_xlabel() == "batch size (requests)"
    matplotlib.pyplot.close(fig)


def test_stage_colours_are_fixed_and_distinct():
    known = [plots.stage_color(s) for s in ("python_baseline", "triton_inplace", "zero_sync")]
    assert len(set(known)) == 3
    assert plots.stage_color("zero_sync") == plots.stage_color("zero_sync")


def test_notebook_check_fill_catches_a_write_past_n():
    def writes_one_too_many(ext, seq, topk, out, out_cache):
        n = nk.STAGES["python_baseline"](ext, seq, topk, out, out_cache)
        out[n:n + 1] = 0  # inside the buffer, past N
        return n

    ext, seq = lengths([2, 1], [5, 9])
    case = [("two requests", ext, seq, 2048)]
    assert checks.check_fill(nk.STAGES["python_baseline"], case)[0][2] == 3
    with pytest.raises(AssertionError, match="two requests: out_seqlens_expanded"):
        checks.check_fill(writes_one_too_many, case)


def test_notebook_check_fill_catches_a_write_outside_the_buffer():
    def writes_past_the_view(ext, seq, topk, out, out_cache):
        n = nk.STAGES["python_baseline"](ext, seq, topk, out, out_cache)
        torch.as_strided(out, (out.numel() + 1,), (1,))[-1] = 0  # one entry beyond the view
        return n

    ext, seq = lengths([2, 1], [5, 9])
    with pytest.raises(AssertionError, match="canary margin"):
        checks.check_fill(writes_past_the_view, [("two requests", ext, seq, 2048)], slack=0)


def test_sync_debug_mode_silences_only_torchs_prototype_note(monkeypatch):
    import warnings

    modes = []

    def fake_set_sync_debug_mode(mode):  # what torch does on a GPU: note once, then switch
        warnings.warn("Synchronization debug mode is a prototype feature and does not yet detect "
                      "all synchronizing operations", UserWarning, stacklevel=2)
        modes.append(mode)

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", fake_set_sync_debug_mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with checks.sync_debug_mode("warn"):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
    assert modes == ["warn", "default"]
    assert [str(w.message) for w in caught] == ["called a synchronizing CUDA operation"]


def test_config_sweep_ticks_are_plain_and_do_not_collide():
    configs = [
        f"{block}/{warps}" for block in (64, 128, 256, 512, 1024, 2048) for warps in (1, 2, 4, 8)
    ]
    records = [{"workload": w, "tokens": n, "autotuned_us": 2.5,
                "fixed_us": {c: 2.0 + i * n / 4096 for i, c in enumerate(configs)}}
               for w, n in (("draft_extend", 96), ("prefill", 65536))]
    fig = plots.config_sweep(records)
    ax = fig.axes[0]
    renderer = _draw(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == configs
    assert not _overlaps(ax.get_xticklabels(), renderer)
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and all("^" not in t and "$" not in t for t in ticks), ticks
    assert "autotuned 2.50 µs" in ax.get_legend().get_texts()[0].get_text()
    matplotlib.pyplot.close(fig)


def test_seed_journey_stacks_validation_on_the_seed_work():
    rows = [{"seed_stage": f"seed_{i}", "ours": f"ours_{i}", "published_us": 150.0 / (i + 1),
             "seed_us": 600.0 / (i + 1), "validation_us": 30.0, "ours_us": 630.0 / (i + 1)}
            for i in range(3)]
    fig = plots.seed_journey(rows, "seed table")
    ax = fig.axes[0]
    renderer = _draw(fig)
    assert not _overlaps(ax.get_xticklabels(), renderer)
    stacked = [p for p in ax.patches if p.get_y() > 0]  # the validation bars sit on the seed's work
    assert [p.get_y() for p in stacked] == [r["seed_us"] for r in rows]
    assert [p.get_height() for p in stacked] == [30.0] * 3
    matplotlib.pyplot.close(fig)


def test_mode_figure_is_one_figure_per_mode_with_a_legend_outside_and_real_ticks():
    from nsa_kernels.bench import modes
    from nsa_kernels.modes import spec

    records = []
    for bs, ours, sglang in ((1, 3.0, 4.0), (4, 3.5, 5.0), (16, 6.0, 9.0), (64, 20.0, 41.0)):
        point = spec.Point("decode", bs, 8192, 1, "real_only")
        recs = [dict(modes.record(point, stage, {"graph_us": t, "eager_us": t}, "", 0),
                     interpreter=False)
                for stage, t in (("nsa_decode", ours), ("sglang_decode", sglang),
                                 ("empty_kernel", 2.0), ("bandwidth_floor", bs / 8))]
        records += modes.finish_point(recs)
    fig = plots.mode_figure(records, ("decode", 1, "real_only"))
    fig.canvas.draw()
    ax_time, ax_ratio = fig.axes
    assert ax_time.get_legend() is None and ax_ratio.get_legend() is None and fig.legends
    assert [t.get_text() for t in ax_time.get_xticklabels()] == ["1", "4", "16", "64"]
    assert fig.get_size_inches()[0] >= 12
    legend_box = fig.legends[0].get_window_extent()
    assert legend_box.x0 >= ax_ratio.get_window_extent().x1  # outside the data
    matplotlib.pyplot.close(fig)
