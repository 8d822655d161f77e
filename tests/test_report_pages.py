"""nsa_report's pages on synthetic results and on the published H100 report: the index's
generic sections, its cross-notebook tables, and the compare page."""
import json
import re
import shutil
from pathlib import Path

import pytest

from nsa_report import compare, index
from nsa_report.labels import as_text

H100 = Path(__file__).resolve().parents[1] / "reports" / "h100"

STAMP = {"device": "GPU<x>", "driver": "1", "torch": "2", "triton": "3", "python": "3.12",
         "commit": "abc", "profile": "full", "interpreter": False, "date": "today"}


def fragment(folder, notebook, records, env=None, **extra):
    targets = extra.pop("top_targets", None)
    doc = {"notebook": notebook, "environment": env or STAMP, "records": records,
           "figures": extra.pop("figures", []), "extra": extra}
    if targets is not None:
        doc["targets"] = targets
    (folder / f"results_{notebook}.json").write_text(json.dumps(doc))


def rec(stage, workload, bs, graph=None, eager=10.0, **more):
    return {"stage": stage, "workload": workload, "bs": bs, "tokens": bs * 2, "eager_us": eager,
            "throughput_us": None, "graph_us": graph, **more}


@pytest.fixture
def modes_report(tmp_path):
    """Records of the kinds the mode, peer and floor notebooks write."""
    report = tmp_path / "r"
    report.mkdir()
    records = []
    for workload in ("decode", "target_verify", "draft_extend_varlen"):
        for bs in (1, 32):
            records += [rec(f"nsa_{workload}", workload, bs, graph=2.0, width=2048, next_n=2),
                        rec(f"sglang_{workload}", workload, bs, graph=6.0, width=2048, next_n=2,
                            config="fused_metadata_kernel, page 64"),
                        rec("empty_kernel", workload, bs, graph=1.0, width=2048, next_n=2),
                        rec("bandwidth_floor", workload, bs, graph=0.5 * bs, width=2048,
                            next_n=2)]
    records.append(rec("vllm_indexer", "decode", 32, graph=8.0, width=2048, next_n=2,
                       config="vLLM 0.33 indexer"))
    fragment(report, "09_modes", records, top_targets=[
        {"target": "decode within 2x the floor", "measured": "2.0x", "met": True, "note": ""}])
    floors = [rec(s, "draft_extend", 32, eager=e, host_us=h) for s, e, h in
              (("sync_only", 9.0, 8.0), ("torch_op", 7.0, 6.0), ("empty_kernel", 5.0, 4.0),
               ("empty_driver", 3.0, 2.5), ("empty_graph", 2.0, 1.5))]
    fragment(report, "05_launch", floors, targets=[
        {"target": "driver launch < 4 us", "measured": 3.0, "met": True, "note": "host"}])
    fragment(report, "07_summary", [rec("python_baseline", "draft_extend", 32, eager=500.0),
                                    rec("seed_fused", "draft_extend", 32, eager=5.0),
                                    rec("zero_sync", "draft_extend", 32, eager=20.0),
                                    rec("validation", "draft_extend", 32, eager=1.0)])
    results = index.build(report, "gpu", ["05_launch", "07_summary", "09_modes"],
                          {n: {"status": "ok"} for n in ("05_launch", "07_summary", "09_modes")})
    return report, results, (report / "index.html").read_text()


def test_modes_against_peers_table(modes_report):
    _, results, html = modes_report
    table = index.peers_table(results["records"])
    by_key = {(row[0], row[2]): row for row in table["rows"]}
    assert set(by_key) == {(f"09_modes: {w}", bs)
                           for w in ("decode", "target_verify next_n=2",
                                     "draft_extend_varlen next_n=2") for bs in (1, 32)}
    decode = by_key[("09_modes: decode", 32)]
    assert decode[4:8] == [2.0, 6.0, 8.0, 16.0]            # ours, SGLang, vLLM, floor
    assert decode[8:11] == [2.0 / 6.0, 0.25, 2.0 / 16.0]    # ours / SGLang, vLLM, floor
    # the floor is max(empty launch, bandwidth floor): the empty launch at bs 1
    assert by_key[("09_modes: decode", 1)][7] == 1.0
    assert by_key[("09_modes: decode", 1)][6] is None      # no vLLM record there
    assert "Modes against the peers" in html and "0.33x" in html
    assert "fused_metadata_kernel, page 64" in html and "vLLM 0.33 indexer" in html


def test_floors_table_and_targets(modes_report):
    _, results, html = modes_report
    table = index.floors_table(results["records"])
    assert [row[1] for row in table["rows"]] == ["sync_only", "torch_op", "empty_kernel",
                                                 "empty_driver", "empty_graph"]
    assert "Launch floors" in html
    # targets from extra.targets and from a top-level "targets" entry both reach the index
    assert "05_launch: driver launch &lt; 4 us" in html
    assert "09_modes: decode within 2x the floor" in html


def test_records_are_grouped_by_workload_width_next_n(modes_report):
    _, results, html = modes_report
    groups = index.record_groups([r for r in results["records"] if r["notebook"] == "09_modes"])
    titles = [g["title"] for g in groups]
    assert "decode, width=2048, next_n=2: graph µs" in titles
    assert "target_verify, width=2048, next_n=2: eager µs" in titles
    decode = groups[titles.index("decode, width=2048, next_n=2: graph µs")]
    assert decode["columns"] == ["bs", "tokens", "nsa_decode", "sglang_decode", "empty_kernel",
                                 "bandwidth_floor", "vllm_indexer"]
    assert decode["rows"] == [[1, 2, 2.0, 6.0, 1.0, 0.5, None],
                              [32, 64, 2.0, 6.0, 1.0, 16.0, 8.0]]


def test_answer_ignores_seed_floors_and_validation(modes_report):
    _, results, html = modes_report
    assert ("Best stage at draft_extend bs=32: zero_sync, 25.0x faster than python_baseline"
            in html)


def test_answer_when_nothing_beats_the_baseline():
    records = [{**rec("python_baseline", "draft_extend", 32, eager=10.0), "notebook": "07_s"},
               {**rec("zero_sync", "draft_extend", 32, eager=30.0), "notebook": "07_s"}]
    text = index.answer(records, interpreter=True, summary="07_s")
    assert text.startswith("No stage beats python_baseline") and "interpreter" in text
    assert "1.0x faster than python_baseline" not in text


def test_index_navigation_and_enlargeable_plots(tmp_path):
    report = tmp_path / "r"
    report.mkdir()
    (report / "a.png").write_bytes(b"png")
    fragment(report, "00_a", [rec("python_baseline", "draft_extend", 1)],
             figures=["a.png", "gone.png"])
    index.build(report, "x", ["00_a"], {"00_a": {"status": "ok"}})
    html = (report / "index.html").read_text()
    assert '<nav class="toc">' in html and 'href="#nb-00_a"' in html and 'id="nb-00_a"' in html
    assert 'href="#fig-nb-00_a-1"' in html and 'id="fig-nb-00_a-1"' in html
    assert ".lightbox:target" in html
    assert "00_a: figure gone.png is missing" in html and 'src="gone.png"' not in html


def test_compare_two_reports(tmp_path):
    a, b = tmp_path / "h100", tmp_path / "h200"
    for folder, scale, device in ((a, 1.0, "H100"), (b, 0.5, "H200")):
        folder.mkdir()
        recs = [rec("zero_sync", "draft_extend", bs, graph=4.0 * scale, eager=20.0)
                for bs in (1, 32)]
        if folder == b:
            recs.append(rec("new_stage", "draft_extend", 1, graph=1.0))
        fragment(folder, "07_summary", recs, env={**STAMP, "device": device})
        index.build(folder, folder.name, ["07_summary"], {"07_summary": {"status": "ok"}})
    assert compare.main([str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert doc["times"] == ["eager_us", "graph_us"]
    assert doc["counts"]["only_a"] == 0 and doc["counts"]["only_b"] == 1
    assert len(doc["rows"]) == 2
    graph = len(doc["key"]) + 3 * doc["times"].index("graph_us") + 2
    assert [row[graph] for row in doc["rows"]] == [0.5, 0.5]
    stage = next(s for s in doc["stages"] if s["stage"] == "zero_sync" and s["time"] == "graph_us")
    assert (stage["sizes"], stage["geomean"], stage["min"], stage["max"]) == (2, 0.5, 0.5, 0.5)
    assert ["device", "H100", "H200"] in doc["stamps"]
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "0.50x" in page and "H200" in page


def test_carried_notebook_names_its_own_run(tmp_path):
    """A report merged twice: a carried notebook is attributed to the run in its own results
    fragment, not to the folder's oldest report (the H100 report of 2026-11-25 was stamped
    with the oldest run before this fix)."""
    import json

    from nsa_report.folder import carry_over

    dest, tmp = tmp_path / "rep", tmp_path / "tmp"
    dest.mkdir()
    tmp.mkdir()
    (dest / "results_09.json").write_text(json.dumps(
        {"environment": {"date": "2026-11-25T04:40:56+00:00", "commit": "newcommit"}}))
    (dest / "results.json").write_text(json.dumps({
        "environment": {"date": "2026-11-25T00:19:10+00:00", "commit": "oldcommit"},
        "notebooks": [{"name": "09", "status": "ok", "fragment": "results_09.json"},
                      {"name": "08", "status": "ok"}]}))
    carried = carry_over(dest, tmp, names=["00"])
    assert carried["09"]["carried_from"] == "run of 2026-11-25T04:40:56+00:00, commit newcommit"
    # without a stamped fragment, the report's own stamp is all there is
    assert carried["08"]["carried_from"] == "run of 2026-11-25T00:19:10+00:00, commit oldcommit"
    assert (tmp / "results_09.json").is_file()


# --------------------------------------------------------------------------- the H100 report

@pytest.fixture(scope="module")
def h100_index(tmp_path_factory):
    """The published H100 report, its index rebuilt by this code in a copy."""
    report = tmp_path_factory.mktemp("h100") / "h100"
    shutil.copytree(H100, report)
    results = index.build(report, "h100")
    return report, results, (report / "index.html").read_text()


def test_h100_peers_table_has_a_row_per_point_and_the_notebooks_floor(h100_index):
    _, results, html = h100_index
    table = index.peers_table(results["records"])
    points = {(r["notebook"], r.get("mode") or r["workload"], r.get("variant"), r.get("next_n"),
               r.get("width"), r["bs"], r.get("tokens"), r.get("shape"))
              for r in results["records"]
              if r["stage"] == "ours"
              or (r["stage"].startswith("nsa_") and r["stage"] != "nsa_extend_fill")}
    assert len(table["rows"]) == len(points) == 368
    # ours / floor is the notebook's own vs_floor (max of the empty launch and the bandwidth
    # floor), not ours over the bandwidth floor alone
    ours = {(r.get("mode") or r["workload"], r.get("variant"), r.get("next_n"), r["width"],
             r["bs"]): r for r in results["records"]
            if r["notebook"] == "11_modes_vs_peers" and r["stage"].startswith("nsa_")}
    checked = 0
    for row, point in zip(table["rows"], index.peer_points(results["records"])):
        if point["notebook"] != "11_modes_vs_peers":
            continue
        record = ours[(point["mode"], point["variant"], point["next_n"], point["width"],
                       point["bs"])]
        assert row[10] == pytest.approx(record["vs_floor"], rel=1e-12)
        checked += 1
    assert checked == 318
    assert max(row[10] for row in table["rows"] if row[10] is not None) < 20


def test_h100_long_tables_are_collapsed_under_a_summary(h100_index):
    _, _, html = h100_index
    summaries = re.findall(r"<details><summary>([^<]*)</summary>", html)
    peers = next(s for s in summaries if s.startswith("368 points in 14 modes"))
    assert "ours faster than SGLang at" in peers and "ours / floor median" in peers
    floors = next(s for s in summaries if s.startswith("615 floor records of"))
    assert "empty_kernel" in floors
    assert sum(s.endswith("rows (click to show)") for s in summaries) >= 1


def test_h100_headers_read_in_words_with_units(h100_index):
    _, _, html = h100_index
    headers = set(re.findall(r"<th>([^<]*)</th>", html))
    assert {"host µs", "eager µs", "graph µs", "ours / floor"} <= headers
    assert not {h for h in headers if re.fullmatch(r"\w+_us", h)}
    assert {"python_baseline", "nsa_decode", "sglang_decode"} <= headers   # stages as named


def test_h100_targets_show_text_not_a_raw_dict(h100_index):
    _, _, html = h100_index
    assert "zero_sync_request_kernel: 1, zero_sync_token_kernel: 1" in html
    assert "{&#39;zero_sync_request_kernel&#39;" not in html


def test_pages_show_no_absolute_machine_paths(tmp_path):
    report = tmp_path / "r"
    report.mkdir()
    fragment(report, "11_modes", [rec("nsa_decode", "decode", 1, graph=2.0)],
             skipped=[{"what": "vLLM peer", "reason": "not found in /root/work/.peers/vllm"}],
             top_targets=[{"target": "t", "measured": "ok", "met": None,
                           "note": "peers from /work/main/.peers_slim/sglang"}])
    index.build(report, "x", ["11_modes"], {"11_modes": {"status": "ok"}})
    html = (report / "index.html").read_text()
    assert "/root/" not in html and "/work/" not in html
    assert "not found in …/vllm" in html and "peers from …/sglang" in html
    assert as_text("v1/attention/backends/mla/indexer.py") == \
        "v1/attention/backends/mla/indexer.py"


def test_lightbox_shows_a_figure_at_native_size_with_scrolling(tmp_path):
    report = tmp_path / "r"
    report.mkdir()
    (report / "a.png").write_bytes(b"png")
    fragment(report, "00_a", [rec("python_baseline", "draft_extend", 1)], figures=["a.png"])
    index.build(report, "x", ["00_a"], {"00_a": {"status": "ok"}})
    html = (report / "index.html").read_text()
    box = re.search(r"\.lightbox\{([^}]*)\}", html).group(1)
    image = re.search(r"\.lightbox img\{([^}]*)\}", html).group(1)
    assert "overflow:auto" in box
    assert "max-width:none" in image and "object-fit" not in image and "vw" not in image


def test_merged_report_banner_counts_the_carried_notebooks(tmp_path):
    report = tmp_path / "r"
    report.mkdir()
    for name in ("00_a", "01_b"):
        fragment(report, name, [rec("python_baseline", "draft_extend", 1)])
    index.build(report, "x", ["00_a", "01_b"],
                {"00_a": {"status": "ok"},
                 "01_b": {"status": "ok", "carried_from": "run of yesterday"}})
    html = (report / "index.html").read_text()
    assert "All 2 notebooks of this report completed: 1 run now, 1 carried from an earlier run" \
        in html
    assert "All 2 notebooks of this run completed" not in html
