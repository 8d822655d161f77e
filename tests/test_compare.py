"""``nsa_report.compare`` on the published H100 report and on a perturbed copy of it (an
H200-like report: ours 20% faster, the peers 10%, spreads stored, one bad floor sample)."""
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nsa_report import compare, compare_moves
from nsa_report.compare_match import match
from nsa_report.points import is_floor, peer_points, role_of

H100 = Path(__file__).resolve().parents[1] / "reports" / "h100"
TIMES = ("eager_us", "graph_us", "throughput_us", "host_us", "kernel_graph_us", "best_graph_us")
SPREAD = 0.02  # p20 / p80 at 2% either side of the median


@pytest.fixture(scope="module")
def h100():
    return json.loads((H100 / "results.json").read_text())


def with_spread(document, spread=SPREAD):
    out = copy.deepcopy(document)
    for r in out["records"]:
        for t in TIMES:
            if isinstance(r.get(t), (int, float)):
                r[f"{t}_p20"], r[f"{t}_p80"] = r[t] * (1 - spread), r[t] * (1 + spread)
    return out


def perturbed(document):
    """Ours 0.8x, SGLang and vLLM 0.9x, every other stage 1.01x (inside a 2% spread), the
    first empty kernel's graph time 20x (one bad sample), device H200."""
    out = with_spread(document)
    out["environment"]["device"] = "NVIDIA H200"
    bad_floor = next(r for r in out["records"] if r["stage"] == "empty_kernel"
                     and isinstance(r.get("graph_us"), float))
    for r in out["records"]:
        role = role_of(r)
        scale = 0.8 if role == "ours" else 0.9 if role in ("sglang", "vllm") else 1.01
        for t in TIMES:
            if isinstance(r.get(t), (int, float)):
                factor = 20.0 if (r is bad_floor and t == "graph_us") else scale
                for key in (t, f"{t}_p20", f"{t}_p80"):
                    r[key] *= factor
    return out


def write_report(folder, document):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(document))
    return folder


def run_cli(tmp_path, a, b, *extra):
    out = tmp_path / "cmp"
    code = compare.main([str(a), str(b), "--out", str(out), *extra])
    doc = json.loads((out / "compare.json").read_text()) if code == 0 else None
    return code, doc, out


# --------------------------------------------------------------------------- matching

def test_a_report_against_itself_matches_every_record(tmp_path, h100):
    code, doc, _ = run_cli(tmp_path, H100, H100)
    assert code == 0
    assert len(doc["rows"]) == len(h100["records"]) == 2582
    assert doc["counts"] == {"a": 2582, "b": 2582, "matched": 2582, "compared": 2582,
                             "only_a": 0, "only_b": 0}
    per_nb = {nb["notebook"]: nb for nb in doc["notebooks"]}
    assert sum(nb["matched"] for nb in per_nb.values()) == 2582
    assert all(nb["matched"] == nb["a"] == nb["b"] for nb in per_nb.values())
    assert per_nb["11_modes_vs_peers"]["matched"] == 1536
    # only the notebooks that sweep a point twice share identities (09-11 none: variant and
    # config keep decode with and without the wide table, SM100 and Hopper verify apart)
    assert [w.split(":")[0] for w in doc["warnings"]] == ["03_triton_bsearch", "05_zero_sync"]
    assert all(per_nb[nb]["shared_a"] == 0 for nb in ("09_decode_verify", "10_extend",
                                                      "11_modes_vs_peers"))
    assert doc["headline"] == []          # nothing moved


def test_records_differing_only_in_variant_or_config_are_each_compared(tmp_path):
    base = {"stage": "sglang_target_verify", "workload": "target_verify", "bs": 8,
            "tokens": 16, "width": 8192, "next_n": 2, "notebook": "11", "eager_us": None}
    a = [dict(base, variant="", config="SM100", graph_us=10.0),
         dict(base, variant="hopper", config="Hopper", graph_us=20.0),
         dict(base, variant="hopper", config="Hopper, wide", graph_us=40.0)]
    b = [dict(r, graph_us=r["graph_us"] / 2) for r in a]
    code, doc, _ = run_cli(tmp_path, write_report(tmp_path / "a", {"records": a}),
                           write_report(tmp_path / "b", {"records": b}))
    assert code == 0
    start = len(doc["key"]) + 3 * doc["times"].index("graph_us")
    assert [row[start:start + 3] for row in doc["rows"]] == [[10.0, 5.0, 0.5], [20.0, 10.0, 0.5],
                                                            [40.0, 20.0, 0.5]]
    assert doc["warnings"] == [] and doc["counts"]["matched"] == 3


def test_records_sharing_an_identity_are_matched_in_order_and_named():
    rec = {"stage": "sync_only", "workload": "draft_extend", "bs": 1, "tokens": 2,
           "notebook": "03_triton_bsearch"}
    a = [dict(rec, eager_us=1.0), dict(rec, eager_us=2.0)]
    b = [dict(rec, eager_us=3.0), dict(rec, eager_us=4.0)]
    matched = match(a, b)
    assert [(ra["eager_us"], rb["eager_us"]) for ra, rb in matched["pairs"]] == [(1.0, 3.0),
                                                                               (2.0, 4.0)]
    assert len(matched["warnings"]) == 1
    assert "03_triton_bsearch: 2 records of A and B share their identity" in \
        matched["warnings"][0]
    assert "sync_only @ draft_extend" in matched["warnings"][0]


def test_a_changed_peer_config_still_matches_and_is_named():
    a = [{"stage": "sglang_decode", "workload": "decode", "bs": 1, "tokens": 1, "graph_us": 2.0,
          "notebook": "11", "config": "SGLang 0.5.23 fused"}]
    b = [dict(a[0], config="SGLang 0.5.24 fused", graph_us=1.0)]
    matched = match(a, b)
    assert len(matched["pairs"]) == 1
    assert "config differs" in matched["warnings"][0] and "0.5.24" in matched["warnings"][0]


def test_records_only_in_one_report_are_counted_per_notebook(tmp_path, h100):
    b = copy.deepcopy(h100)
    dropped = [r for r in b["records"] if r["notebook"] == "10_extend"][:5]
    b["records"] = [r for r in b["records"] if not any(r is d for d in dropped)]
    code, doc, out = run_cli(tmp_path, H100, write_report(tmp_path / "b", b))
    assert code == 0
    per_nb = {nb["notebook"]: nb for nb in doc["notebooks"]}
    assert per_nb["10_extend"]["only_a"] == 5 and per_nb["10_extend"]["matched"] == 37
    assert doc["counts"]["only_a"] == 5 and len(doc["only_a"]) == 5
    assert "5 only in A" in (out / "compare.html").read_text()


# --------------------------------------------------------------------------- headline

def test_floors_and_moves_inside_the_noise_never_lead(tmp_path, h100):
    a = write_report(tmp_path / "a", with_spread(h100))
    b = write_report(tmp_path / "b", perturbed(h100))
    code, doc, _ = run_cli(tmp_path, a, b)
    assert code == 0
    assert doc["headline"], "ours moved 20%: outside a 2% spread"
    for move in doc["headline"]:
        stage = move["record"].split(" @ ")[0]
        assert not is_floor(stage)
        assert move["verdict"] == compare_moves.REAL
        assert math.isclose(move["ratio"], 0.8) or math.isclose(move["ratio"], 0.9)
    # the bad empty-kernel sample is the largest floor move, listed apart
    assert math.isclose(doc["floors"][0]["ratio"], 20.0)
    assert doc["verdicts"][compare_moves.NOISE] > 0   # every 1.01x move
    assert doc["verdicts"][compare_moves.UNKNOWN] == 0


def test_old_reports_without_spread_say_so(tmp_path, h100):
    b = perturbed(h100)
    for r in b["records"]:
        for key in [k for k in r if k.endswith(("_p20", "_p80"))]:
            del r[key]
    code, doc, _ = run_cli(tmp_path, H100, write_report(tmp_path / "b", b))
    assert code == 0
    assert doc["verdicts"][compare_moves.NOISE] == 0
    assert {m["verdict"] for m in doc["headline"]} == {compare_moves.UNKNOWN}
    assert not any(is_floor(m["record"].split(" @ ")[0]) for m in doc["headline"])


@pytest.mark.parametrize("va, vb, band_a, band_b, expected", [
    (10.0, 10.1, (9.8, 10.2), (9.9, 10.3), compare_moves.NOISE),     # inside both bands
    (10.0, 8.0, (9.8, 10.2), (7.8, 8.2), compare_moves.REAL),
    (10.0, 10.5, (9.0, 10.4), (10.4, 10.6), compare_moves.NOISE),    # pooled spread
    (10.0, 10.5, None, None, compare_moves.UNKNOWN),
    (10.0, 10.1, (9.8, 10.2), None, compare_moves.NOISE),            # one band
    (10.0, 12.0, (9.8, 10.2), None, compare_moves.REAL),
])
def test_noise_verdict(va, vb, band_a, band_b, expected):
    assert compare_moves.verdict(va, vb, band_a, band_b) == expected


def test_per_mode_ratios_in_a_and_b_and_how_they_moved(tmp_path, h100):
    a = write_report(tmp_path / "a", with_spread(h100))
    b = write_report(tmp_path / "b", perturbed(h100))
    code, doc, out = run_cli(tmp_path, a, b)
    assert code == 0
    modes = {m["label"]: m for m in doc["modes"]}
    labels = {p["label"] for p in peer_points(h100["records"])}
    assert set(modes) == labels and len(labels) == 14
    verify = modes["11_modes_vs_peers: target_verify hopper next_n=4"]
    assert verify["points"] == [33, 33, 33]
    assert math.isclose(verify["ours_vs_sglang"]["moved"], 0.8 / 0.9)
    assert math.isclose(verify["ours_vs_vllm"]["moved"], 0.8 / 0.9)
    assert math.isclose(verify["ours_moved"], 0.8) and math.isclose(verify["sglang_moved"], 0.9)
    # the floor moved 1.01x (the empty launch) or 1.01x (bandwidth): ours / floor by 0.8 / 1.01
    assert math.isclose(verify["ours_vs_floor"]["moved"], 0.8 / 1.01)
    expected_a = math.exp(sum(math.log(p["ours_vs_sglang"]) for p in peer_points(h100["records"])
                              if p["label"] == verify["label"]) / 33)
    assert math.isclose(verify["ours_vs_sglang"]["a"], expected_a)
    assert doc["devices"] == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    assert len(doc["figures"]) == 14
    for name in doc["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "compare.html").read_text()
    assert "Per mode against the peers: NVIDIA H100 80GB HBM3 (A) and NVIDIA H200 (B)" in page
    assert f'src="{doc["figures"][verify["label"]]}"' in page


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("field, value", [("interpreter", True), ("profile", "quick")])
def test_unlike_runs_are_refused_unless_forced(tmp_path, h100, capsys, field, value):
    b = copy.deepcopy(h100)
    b["environment"][field] = value
    b_dir = write_report(tmp_path / "b", b)
    code, _, out = run_cli(tmp_path, H100, b_dir)
    assert code == 2 and not (out / "compare.html").exists()
    err = capsys.readouterr().err
    assert f"A and B differ in {field}" in err and "--force" in err
    code, doc, out = run_cli(tmp_path, H100, b_dir, "--force")
    assert code == 0 and doc["disagree"][0][0] == field
    assert f"WARNING: A and B differ in {field}" in capsys.readouterr().out
    page = (out / "compare.html").read_text()
    assert page.index(f"A and B differ in {field}") < page.index("<h1>")


def test_another_commit_is_compared_with_a_notice_naming_it(tmp_path, h100, capsys):
    b = copy.deepcopy(h100)
    b["environment"]["commit"] = "0123456789ab"
    code, doc, out = run_cli(tmp_path, H100, write_report(tmp_path / "b", b))
    assert code == 0
    assert doc["confounders"] == [["commit", h100["environment"]["commit"], "0123456789ab"]]
    assert "note: A and B also differ in commit" in capsys.readouterr().out
    page = (out / "compare.html").read_text()
    assert page.index("A and B also differ in commit") < page.index("<h1>")
    code, doc, _ = run_cli(tmp_path, H100, H100)
    assert doc["confounders"] == []


def test_interpreter_read_off_the_records_when_the_stamp_lacks_it(tmp_path, h100):
    b = copy.deepcopy(h100)
    b["environment"]["interpreter"] = None
    for r in b["records"]:
        r["interpreter"] = True
    code, _, _ = run_cli(tmp_path, H100, write_report(tmp_path / "b", b))
    assert code == 2


def _record(**extra):
    return {"stage": "zero_sync", "workload": "draft_extend", "bs": 1, "tokens": 2,
            "eager_us": 1.0, **extra}


@pytest.mark.parametrize("document, says", [
    ([1, 2], "the document is list, not an object"),
    ({"records": {"a": 1}}, "records is dict, not a list"),
    ({"environment": {}}, "records is NoneType, not a list"),
    ({"records": ["x"]}, "records[0] is str, not an object"),
    ({"records": [{"stage": "zero_sync", "workload": "w", "bs": 1}]},
     "records[0] (stage 'zero_sync') has none of the times"),
    ({"records": [_record(), _record(graph_us="12.5")]},
     "records[1] (stage 'zero_sync'): graph_us is \"12.5\", not a finite number"),
    ({"records": [_record(eager_us=True)]}, "eager_us is true, not a finite number"),
    ({"records": [_record(graph_us_p20="x")]}, "graph_us_p20 is \"x\""),
    ({"records": [{"workload": "w", "eager_us": 1.0}]}, "records[0] has no stage"),
])
def test_malformed_documents_exit_2_naming_file_and_field(tmp_path, capsys, document, says):
    bad = write_report(tmp_path / "bad", document)
    code, _, _ = run_cli(tmp_path, H100, bad)
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad / "results.json") in err and says in err


def test_unreadable_json_exits_2_from_the_command_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "nsa_report.compare", str(H100), str(bad),
                           "--out", str(tmp_path / "cmp")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "results.json: not readable JSON" in proc.stderr


def test_extreme_zero_and_negative_times_do_not_crash(tmp_path):
    a = [_record(eager_us=1e300, graph_us=0.0, host_us=-1.0, notebook="x")]
    b = [_record(eager_us=1e-300, graph_us=1.0, host_us=2.0, notebook="x")]
    a_dir = write_report(tmp_path / "a", {"records": a})
    b_dir = write_report(tmp_path / "b", {"records": b})
    code, doc, _ = run_cli(tmp_path, a_dir, b_dir)
    assert code == 0
    assert doc["counts"]["matched"] == 1 and doc["not_comparable"] == 2
    assert doc["headline"][0]["time"] == "eager_us" and doc["headline"][0]["ratio"] == 0.0


def test_points_without_a_usable_bs_or_with_text_widths_are_tabled_not_plotted(tmp_path):
    def point(bs, width, scale):
        return [{"stage": stage, "workload": "decode", "bs": bs, "tokens": 1, "width": width,
                 "notebook": "11", "graph_us": t * scale, "eager_us": None}
                for stage, t in (("nsa_decode", 2.0), ("sglang_decode", 4.0))]
    a = point(None, "wide", 1.0) + point(8, "wide", 1.0) + point(8, 1024, 1.0)
    b = point(None, "wide", 0.5) + point(8, "wide", 0.5) + point(8, 1024, 0.5)
    code, doc, out = run_cli(tmp_path, write_report(tmp_path / "a", {"records": a}),
                             write_report(tmp_path / "b", {"records": b}))
    assert code == 0 and doc["modes"][0]["points"] == [3, 3, 3]
    assert doc["modes"][0]["ours_moved"] == 0.5
    assert (out / doc["figures"]["11: decode"]).is_file()
