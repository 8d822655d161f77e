"""Fragments of the wrong shape and the CSV export (nsa_report.results), without a run."""
import csv
import io
import json

import pytest

from nsa_report import index as report_index
from nsa_report import results

ENV = {"device": "Dev", "driver": None, "torch": "2", "triton": "3", "python": "3.11",
       "commit": "abc", "profile": "quick", "interpreter": True, "date": "today"}
RECORD = {"stage": "nsa_decode", "workload": "decode", "bs": 8, "tokens": 8, "eager_us": 2.5,
          "throughput_us": 2.0, "graph_us": None, "width": 8192, "next_n": None,
          "config": "graph"}


def _build(tmp_path, **fields):
    report = tmp_path / "r"
    report.mkdir()
    fragment = {"notebook": "00_a", "environment": ENV, "records": [RECORD], "figures": [],
                "extra": {}}
    fragment.update(fields)
    (report / "results_00_a.json").write_text(json.dumps(fragment))
    built = report_index.build(report, "r", ["00_a"], {"00_a": {"status": "ok"}})
    return built, "\n".join(built["problems"])


@pytest.mark.parametrize("fields, problem", [
    ({"extra": "text"}, "results_00_a.json: extra is text, not an object; extra dropped"),
    ({"extra": {"tables": [{"title": "t", "columns": ["a"], "rows": 5}]}},
     "results_00_a.json: extra.tables[0].rows is a number, not a list; table dropped"),
    ({"extra": {"tables": "t"}}, "results_00_a.json: extra.tables is text, not a list"),
    ({"extra": {"headline": 3}}, "results_00_a.json: extra.headline is a number"),
    ({"extra": {"targets": {"a": 1}}}, "results_00_a.json: extra.targets is an object"),
    ({"figures": 2}, "results_00_a.json: figures is a number, not a list; figures dropped"),
    ({"figures": ["/abs/fig.png"]}, "results_00_a.json: figures[0] ('/abs/fig.png') is not"),
    ({"environment": "h100"}, "results_00_a.json: environment is text, not an object"),
    ({"records": {"stage": "x"}}, "results_00_a.json: records is an object, not a list"),
    ({"records": [dict(RECORD, bs="8"), RECORD]},
     "results_00_a.json: records[0].bs (nsa_decode) is text, not a number; record dropped"),
    ({"records": [RECORD, dict(RECORD, width=[1])]},
     "results_00_a.json: records[1].width (nsa_decode) is a list, not a number"),
])
def test_a_malformed_fragment_part_is_dropped_and_named(tmp_path, fields, problem):
    built, problems = _build(tmp_path, **fields)
    assert problem in problems, problems
    assert (tmp_path / "r" / "index.html").is_file()
    assert all(isinstance(r["bs"], int) for r in built["records"])


def test_a_well_formed_fragment_has_no_problem(tmp_path):
    built, problems = _build(tmp_path, figures=["sub/fig.png"],
                             extra={"headline": "h", "tables": [{"columns": [], "rows": []}]})
    assert problems == "" and built["records"][0]["bs"] == 8
    assert built["notebooks"][0]["figures"] == ["sub/fig.png"]


def test_csv_rows_are_long_format_with_the_spread_when_measured():
    record = dict(RECORD, graph_us=1.5, graph_us_p20=1.4, graph_us_p80=1.75, host_us=0.5,
                  best_graph_us=1.0, eager_us_p20="n/a", notebook="11_x")
    rows = results.csv_rows({"environment": ENV, "records": [record]})
    assert rows == [
        ["Dev", "abc", "11_x", "nsa_decode", "decode", "graph", 8, 8192, None, "eager_us", 2.5,
         None, None],
        ["Dev", "abc", "11_x", "nsa_decode", "decode", "graph", 8, 8192, None, "throughput_us",
         2.0, None, None],
        ["Dev", "abc", "11_x", "nsa_decode", "decode", "graph", 8, 8192, None, "graph_us", 1.5,
         1.4, 1.75],
        ["Dev", "abc", "11_x", "nsa_decode", "decode", "graph", 8, 8192, None, "host_us", 0.5,
         None, None]]


def test_write_csv_has_the_header_and_empty_cells_for_null(tmp_path):
    path = tmp_path / "results.csv"
    results.write_csv(path, {"environment": ENV, "records": [dict(RECORD, notebook="n")]})
    parsed = list(csv.reader(io.StringIO(path.read_text())))
    assert parsed[0] == list(results.CSV_COLUMNS)
    assert parsed[1] == ["Dev", "abc", "n", "nsa_decode", "decode", "graph", "8", "8192", "",
                         "eager_us", "2.5", "", ""]
    assert len(parsed) == 3 and not (tmp_path / "results.csv.tmp").exists()
