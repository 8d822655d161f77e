"""run_all.sh and the nsa_report package, on the tiny notebooks under tests/fixtures/.

Each papermill run starts a kernel (a few seconds), so the good run is made once per module
and copied where a test needs "the last good report" at the destination.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nsa_report import failure
from nsa_report import index as report_index
from nsa_report.fmt import fmt

ROOT = Path(__file__).resolve().parents[1]
RUN_ALL = ROOT / "run_all.sh"
FIXTURES = ROOT / "tests" / "fixtures"

ENV_KEYS = {"device", "driver", "torch", "triton", "python", "commit", "profile",
            "interpreter", "date", "run", "notebooks"}
RECORD_KEYS = {"stage", "workload", "bs", "tokens", "eager_us", "throughput_us", "graph_us",
               "notebook"}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="run_all.sh needs bash")


def run_all(*args, timeout=300):
    env = {**os.environ, "NSA_PYTHON": sys.executable}
    return subprocess.run(["bash", str(RUN_ALL), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def explain(proc):
    return (f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-6000:]}")


def leftovers(parent):
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith((".tmp-", ".old-")))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "rep"
    proc = run_all("--no-setup", "--profile", "quick", "--notebooks-dir", FIXTURES / "good",
                   "--out", out)
    return out, proc


@pytest.fixture
def previous_report(good_run, tmp_path):
    """A copy of the good report at a fresh destination, with its index bytes."""
    src, proc = good_run
    assert proc.returncode == 0, explain(proc)
    dest = tmp_path / "rep"
    shutil.copytree(src, dest)
    return dest, (dest / "index.html").read_bytes(), (dest / "results.json").read_bytes()


# ------------------------------------------------------------------------- (a) good run

def test_good_run_writes_the_report(good_run):
    out, proc = good_run
    assert proc.returncode == 0, explain(proc)
    for name in ("00_alpha", "01_beta", "07_summary"):
        assert (out / f"{name}.ipynb").is_file()
        assert (out / f"{name}.html").is_file()
    assert (out / "alpha_eager.png").is_file()
    assert leftovers(out.parent) == []
    assert not (out.parent / ".failed-rep").exists()

    results = json.loads((out / "results.json").read_text())
    env = results["environment"]
    assert ENV_KEYS <= set(env), ENV_KEYS - set(env)
    assert env["run"] == "rep" and env["profile"] == "quick"
    assert env["notebooks"] == ["00_alpha", "01_beta", "07_summary"]
    assert results["status"] == "ok"
    assert len(results["records"]) == 6
    for record in results["records"]:
        assert RECORD_KEYS <= set(record), RECORD_KEYS - set(record)
        assert record["notebook"] == "00_alpha"
    assert [(nb["name"], nb["status"], nb["html"]) for nb in results["notebooks"]] == [
        ("00_alpha", "ok", "00_alpha.html"), ("01_beta", "ok", "01_beta.html"),
        ("07_summary", "ok", "07_summary.html")]
    assert set(results["extras"]) == {"00_alpha", "07_summary"}


def test_default_profile_follows_the_machine():
    """The good run names its profile; without --profile run_all picks it from the GPU."""
    import torch

    from nsa_report import run
    assert run.detect_profile() == ("full" if torch.cuda.is_available() else "quick")


def test_good_index_opens_with_the_answer(good_run):
    out, proc = good_run
    assert proc.returncode == 0, explain(proc)
    index = (out / "index.html").read_text()
    env = json.loads((out / "results.json").read_text())["environment"]
    assert "<h1>nsa-workbook report: rep</h1>" in index
    assert "FAILED" not in index
    assert ("Triton interpreter on CPU: timings are interpreter timings" in index) == bool(
        env["interpreter"])
    assert f"torch {env['torch']}" in index and f"commit {env['commit']}" in index
    # The summary comes first, then the links to every notebook, then the other notebooks'
    # tables, the plots, what was skipped and the data.
    order = [index.index(s) for s in ("stages vs the seed", 'href="00_alpha.html"', "alpha table",
                                      'src="alpha_eager.png"', "skipped: graph timings",
                                      'href="results.json"')]
    assert order == sorted(order)
    assert "&lt;eager&gt;" in index and "<eager>" not in index   # escaped headline
    assert "✓ met" in index and "✗ missed" in index and ">n/a<" in index
    assert "1,230" in index and "3.14" in index                  # 3 significant digits
    assert re.search(r'id="nb-01_beta">01_beta<a[^>]*>top</a></h3>\s*'
                     r'<p class="none">no results</p>', index)
    assert "src=\"/" not in index and "href=\"/" not in index       # links are relative


# ------------------------------------------------------------------------- (b) failing run

def test_failing_run_keeps_the_last_good_report(previous_report):
    dest, index_before, results_before = previous_report
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "failing", "--out", dest)
    assert proc.returncode == 1, explain(proc)
    both = proc.stdout + proc.stderr
    assert "FAILED: notebook 00_raises, cell 3 (In [4]): ValueError: fixture failure" in both
    assert (dest / "index.html").read_bytes() == index_before
    assert (dest / "results.json").read_bytes() == results_before
    assert leftovers(dest.parent) == []

    failed = dest.parent / ".failed-rep"
    index = (failed / "index.html").read_text()
    assert index.index("This run FAILED") < index.index("<h1>")
    assert "<title>FAILED" in index and "— FAILED</h1>" in index
    assert "class=\"banner banner-ok\"" not in index and "completed" not in index
    assert (failed / "01_after.html").is_file()       # the run went on after the failure
    assert (failed / "00_raises.html").is_file()
    results = json.loads((failed / "results.json").read_text())
    assert results["status"] == "failed"
    status = {nb["name"]: nb for nb in results["notebooks"]}
    assert status["01_after"]["status"] == "ok"
    error = status["00_raises"]["error"]
    assert status["00_raises"]["status"] == "failed"
    assert (error["cell"], error["execution_count"], error["ename"]) == (3, 4, "ValueError")

    # A second failure replaces the older failed folder.
    (failed / "stale").write_text("x")
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "failing", "--only", "00",
                   "--out", dest)
    assert proc.returncode == 1, explain(proc)
    assert not (failed / "stale").exists() and (failed / "index.html").exists()
    assert (dest / "index.html").read_bytes() == index_before


# ------------------------------------------------------------------------- (c) --only

def test_only_runs_a_subset(tmp_path):
    out = tmp_path / "sub"
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", out)
    assert proc.returncode == 0, explain(proc)
    assert sorted(p.name for p in out.glob("*.html")) == ["01_beta.html", "index.html"]
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["notebooks"] == ["01_beta"]
    assert [nb["name"] for nb in results["notebooks"]] == ["01_beta"]
    assert "no summary notebook in this run" in (out / "index.html").read_text()


# ------------------------------------------------------------------------- (d) bad usage

@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option: --bogus"),
    (["--profile", "fast"], "--profile must be quick or full"),
    (["--profile"], "option --profile needs a value"),
    (["--out"], "option --out needs a value"),
    (["stray"], "unexpected argument: stray"),
    (["--notebooks-dir", "/nonexistent/nb"], "notebooks folder not found"),
    (["--notebooks-dir", FIXTURES / "good", "--only", "99"], "no notebook in"),
])
def test_bad_usage_is_a_clear_error(args, message, tmp_path):
    proc = run_all("--no-setup", "--out", tmp_path / "rep", *args, timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert message in proc.stderr, explain(proc)
    assert not (tmp_path / "rep").exists()


def test_help(tmp_path):
    proc = run_all("-h", timeout=60)
    assert proc.returncode == 0 and "Usage: ./run_all.sh" in proc.stdout


def test_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--out", dest, timeout=60)
    assert proc.returncode == 2 and "refusing to replace" in proc.stderr, explain(proc)
    assert (dest / "precious.txt").read_text() == "keep me"


# ------------------------------------------------------------------------- (e) interrupted

def test_interrupted_run_leaves_the_last_report(previous_report):
    dest, index_before, results_before = previous_report
    env = {**os.environ, "NSA_PYTHON": sys.executable}
    proc = subprocess.Popen(["bash", str(RUN_ALL), "--no-setup", "--notebooks-dir",
                             str(FIXTURES / "slow"), "--out", str(dest)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not list(dest.parent.glob(".tmp-rep-*/sleeping")):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the slow notebook never started"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, output
    assert "interrupted" in output
    assert (dest / "index.html").read_bytes() == index_before
    assert (dest / "results.json").read_bytes() == results_before
    assert leftovers(dest.parent) == []
    assert not (dest.parent / ".failed-rep").exists()


# ------------------------------------------------------------------------- build_report unit

@pytest.mark.parametrize("value, text", [
    (None, "—"), (8, "8"), (True, "true"), (0.0, "0"), (3.14159, "3.14"), (12.345678, "12.3"),
    (0.0123456, "0.0123"), (1234.5678, "1,230"), (98765.4, "98,800"), (-2.5e-7, "-2.5e-07"),
    ("text", "text"),
])
def test_fmt(value, text):
    assert fmt(value) == text


def _fragment(report, notebook, **extra):
    records = extra.pop("records", [])
    (report / f"results_{notebook}.json").write_text(json.dumps({
        "notebook": notebook, "environment": {
            "device": "Dev<1>", "driver": "555", "torch": "2", "triton": "3", "python": "3.11",
            "commit": "abc", "profile": "full", "interpreter": False, "date": "today"},
        "records": records, "figures": [], "extra": extra}))


def test_build_report_escapes_and_marks_missing(tmp_path):
    report = tmp_path / "r"
    report.mkdir()
    _fragment(report, "00_a", tables=[{"title": "<script>t</script>", "columns": ["a&b"],
                                        "rows": [["<img src=x onerror=alert(1)>"]]}],
              records=[{"stage": "s", "workload": "w", "bs": 1, "tokens": 1, "eager_us": 1.0,
                        "throughput_us": float("nan"), "graph_us": None}])
    results = report_index.build(report, "gpu", ["00_a", "01_b", "07_summary"],
                                 {"00_a": {"status": "ok"}, "01_b": {"status": "ok"},
                                  "07_summary": {"status": "not run"}})
    index = (report / "index.html").read_text()
    assert "<script>" not in index and "&lt;script&gt;" in index and "a&amp;b" in index
    assert "<img src=x" not in index
    assert "Triton interpreter on CPU" not in index          # interpreter is False here
    assert "Dev&lt;1&gt; · driver 555" in index
    assert "07_summary: no results" in index and "no results" in index.split('id="nb-01_b"')[1]
    saved = json.loads((report / "results.json").read_text())   # strict JSON: NaN -> null
    assert saved == results and saved["records"][0]["throughput_us"] is None
    assert saved["records"][0]["notebook"] == "00_a"


def test_build_report_failed_without_notebook(tmp_path):
    report = tmp_path / "r"
    report.mkdir()
    results = report_index.build(report, "x", ["00_a"], {"00_a": {"status": "failed"}})
    index = (report / "index.html").read_text()
    assert results["status"] == "failed"
    assert index.startswith("<!DOCTYPE html>") and "This run FAILED" in index
    assert "could not start" in results["notebooks"][0]["error"]["summary"]


def test_describe_failure_counts_source_code_cells(tmp_path):
    cells = [
        {"cell_type": "markdown", "source": "x", "metadata": {}},
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": 1,
         "outputs": []},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "execution_count": 2,
         "outputs": []},
        {"cell_type": "code", "metadata": {}, "execution_count": 3, "outputs": [
            {"output_type": "error", "ename": "SystemExit", "evalue": "0", "traceback": []}]},
        {"cell_type": "code", "metadata": {}, "execution_count": 4, "outputs": [
            {"output_type": "error", "ename": "KeyError", "evalue": "'k'\nmore", "traceback": []}]},
    ]
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": cells, "metadata": {}}))
    info = failure.describe_failure(nb)
    assert (info["cell"], info["execution_count"]) == (3, 4)
    assert (failure.failure_line("n", info)
            == "FAILED: notebook n, cell 3 (In [4]): KeyError: 'k' more")
    assert failure.notebook_failed(nb)


# ------------------------------------------------- unusable --out, locks, dead kernels

def test_unwritable_out_is_a_usage_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--out",
                   blocker / "rep", timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert "run_all.sh: error: --out" in proc.stderr and "mkdir:" not in proc.stderr, explain(proc)


def test_out_dot_from_inside_the_report_is_refused(previous_report):
    dest, index_before, _ = previous_report
    env = {**os.environ, "NSA_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(RUN_ALL), "--no-setup", "--notebooks-dir",
                           str(FIXTURES / "good"), "--only", "01", "--out", "."], cwd=dest,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert "is the current folder" in proc.stderr, explain(proc)
    assert (dest / "index.html").read_bytes() == index_before
    assert leftovers(dest.parent) == []


def test_a_second_run_into_the_same_out_is_refused(tmp_path):
    import fcntl

    dest = tmp_path / "rep"
    with open(tmp_path / ".lock-rep", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)   # what a running run holds
        lock.write("4242\n")
        lock.flush()
        proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--out", dest,
                       timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert "another run (pid 4242) is writing to" in proc.stderr, explain(proc)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_a_dead_kernel_names_its_cell(tmp_path):
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "dies", "--out", tmp_path / "rep")
    assert proc.returncode == 1, explain(proc)
    # The execution count is known only when the kernel announced the cell before dying.
    assert re.search(r"FAILED: notebook 00_dies, cell 2( \(In \[3\]\))?: DeadKernelError: "
                     r"Kernel died \(the kernel process died in this cell", proc.stderr), \
        explain(proc)
    assert "cell ?" not in proc.stdout + proc.stderr


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_scratch_of_a_killed_run_is_cleaned_next_time(tmp_path):
    scratch_root = tmp_path / "scratch"
    dead = scratch_root / f"nsa-run-all-{_dead_pid()}-abc"
    alive = scratch_root / f"nsa-run-all-{os.getpid()}-def"
    for d in (dead, alive):
        (d / "logs").mkdir(parents=True)
    env = {**os.environ, "NSA_PYTHON": sys.executable, "TMPDIR": str(scratch_root)}
    proc = subprocess.run(["bash", str(RUN_ALL), "--no-setup", "--notebooks-dir",
                           str(FIXTURES / "good"), "--only", "01", "--out", str(tmp_path / "r")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, explain(proc)
    assert not dead.exists() and alive.is_dir()
    assert sorted(p.name for p in scratch_root.iterdir()) == [alive.name]   # its own is gone


# ------------------------------------------------------------------------- everyday use

def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)


def test_a_published_report_is_replaced_only_on_request(previous_report):
    dest, index_before, _ = previous_report
    repo = dest.parent
    _git(repo, "init", "-q")
    _git(repo, "add", "rep")
    _git(repo, "commit", "-qm", "publish")
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", dest, timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert "published report" in proc.stderr and "--replace-published" in proc.stderr
    assert (dest / "index.html").read_bytes() == index_before
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", dest, "--replace-published")
    assert proc.returncode == 0, explain(proc)


def test_a_partial_run_merges_into_an_existing_report(previous_report):
    dest, _, results_before = previous_report
    before = json.loads(results_before)
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", dest)
    assert proc.returncode == 0, explain(proc)
    assert "partial run: merging into" in proc.stdout and "00_alpha 07_summary" in proc.stdout
    results = json.loads((dest / "results.json").read_text())
    by_name = {nb["name"]: nb for nb in results["notebooks"]}
    assert sorted(by_name) == ["00_alpha", "01_beta", "07_summary"]
    assert "carried_from" not in by_name["01_beta"]
    assert by_name["00_alpha"]["carried_from"].startswith("run of ")
    assert len(results["records"]) == len(before["records"])        # 00_alpha's came along
    assert (dest / "alpha_eager.png").is_file() and (dest / "00_alpha.html").is_file()
    index = (dest / "index.html").read_text()
    assert "Merged report: 00_alpha, 07_summary come from an earlier run" in index


def test_a_partial_run_into_a_new_folder_says_so(tmp_path):
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", tmp_path / "sub")
    assert proc.returncode == 0, explain(proc)
    assert "holds only the notebooks run now" in proc.stdout


def test_published_pages_hold_no_temp_paths_or_kernel_warnings(good_run):
    out, proc = good_run
    assert proc.returncode == 0, explain(proc)
    assert "without encryption" not in proc.stdout + proc.stderr
    for page in sorted(out.glob("*.html")) + sorted(out.glob("*.ipynb")):
        text = page.read_text()
        assert ".tmp-" not in text and str(out.parent) not in text, page.name
    injected = json.loads((out / "00_alpha.ipynb").read_text())["cells"]
    cell = next(c for c in injected if "injected-parameters" in c["metadata"].get("tags", []))
    assert "".join(cell["source"]).strip().endswith('results_dir = "."')


# ------------------------------------------------------------------------- runner hardening

def test_the_banner_of_a_merge_says_what_was_run_and_carried(previous_report):
    dest, _, _ = previous_report
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", dest)
    assert proc.returncode == 0, explain(proc)
    index = (dest / "index.html").read_text()
    assert "All 3 notebooks of this run completed" not in index
    assert ("All 3 notebooks of this report completed: 1 run now, 2 carried from an earlier run"
            in index)
    assert "1 of 1 notebooks of this run ok; 2 carried from the earlier report" in proc.stdout


def test_runs_are_quiet_and_pages_name_no_checkout_path(good_run):
    out, proc = good_run
    assert proc.returncode == 0, explain(proc)
    assert "KeyboardInterrupt" not in proc.stdout + proc.stderr
    page = (out / "01_beta.html").read_text()
    assert "kernels from nsa_kernels" in page
    for path in sorted(out.glob("*.html")) + sorted(out.glob("*.ipynb")) + [
            out / "results.json"]:
        assert str(ROOT) not in path.read_text(), path.name


def test_every_run_writes_results_csv(good_run):
    import csv

    out, proc = good_run
    assert proc.returncode == 0, explain(proc)
    results = json.loads((out / "results.json").read_text())
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["device", "commit", "notebook", "stage", "workload", "config", "bs",
                             "width", "next_n", "metric", "median", "p20", "p80"]
    expected = [(r["stage"], str(r["bs"]), m, repr(r[m])) for r in results["records"]
                for m in ("eager_us", "throughput_us", "graph_us", "kernel_graph_us", "host_us")
                if r.get(m) is not None]
    assert [(r["stage"], r["bs"], r["metric"], r["median"]) for r in rows] == expected
    assert {r["device"] for r in rows} == {results["environment"]["device"]}
    assert {(r["p20"], r["p80"], r["width"]) for r in rows} == {("", "", "")}


@pytest.mark.parametrize("document, field", [
    ([{"name": "00_alpha"}], "the document is a list, not an object"),
    ({"notebooks": ["00_alpha", "07_summary"]}, "notebooks[0] is text, not an object"),
    ({"environment": "h100", "notebooks": []}, "environment is text, not an object"),
    ({"notebooks": [{"name": "00_alpha", "status": "ok", "figures": ["/etc/passwd"]}]},
     "notebooks[0].figures[0] ('/etc/passwd') is not a file inside the report"),
])
def test_merging_into_a_malformed_results_json_is_refused(previous_report, document, field):
    dest, index_before, _ = previous_report
    (dest / "results.json").write_text(json.dumps(document))
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", dest, timeout=120)
    assert proc.returncode == 2, explain(proc)
    assert f"{dest / 'results.json'}: {field}" in proc.stderr, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
    assert leftovers(dest.parent) == [] and not (dest.parent / ".failed-rep").exists()
    assert (dest / "index.html").read_bytes() == index_before
    assert json.loads((dest / "results.json").read_text()) == document


def test_a_malformed_carried_fragment_is_named_and_dropped(previous_report):
    dest, _, _ = previous_report
    fragment_path = dest / "results_00_alpha.json"
    fragment = json.loads(fragment_path.read_text())
    fragment["extra"]["tables"][0]["rows"] = 3
    fragment["figures"] = 7
    fragment["records"][0]["bs"] = "eight"
    fragment["records"][1]["width"] = "wide"
    fragment_path.write_text(json.dumps(fragment))
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", dest)
    assert proc.returncode == 0, explain(proc)
    results = json.loads((dest / "results.json").read_text())
    problems = "\n".join(results["problems"])
    for text in ("results_00_alpha.json: extra.tables[0].rows is a number, not a list",
                 "results_00_alpha.json: figures is a number, not a list",
                 "results_00_alpha.json: records[0].bs (empty_kernel) is text, not a number",
                 "results_00_alpha.json: records[1].width (empty_kernel) is text"):
        assert text in problems, problems
    assert len(results["records"]) == 4
    assert "records[0].bs" in (dest / "index.html").read_text()


def test_a_merge_carrying_a_fragment_whose_extra_is_not_an_object(previous_report):
    dest, _, _ = previous_report
    fragment_path = dest / "results_00_alpha.json"
    fragment = json.loads(fragment_path.read_text())
    fragment["extra"] = "headline text"
    fragment_path.write_text(json.dumps(fragment))
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", dest)
    assert proc.returncode == 0, explain(proc)
    problems = json.loads((dest / "results.json").read_text())["problems"]
    assert "results_00_alpha.json: extra is text, not an object; extra dropped" in problems


def test_an_out_link_is_followed_and_kept(previous_report):
    dest, _, _ = previous_report
    link = dest.parent / "current"
    link.symlink_to(dest)
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", link)
    assert proc.returncode == 0, explain(proc)
    assert link.is_symlink() and link.resolve() == dest
    assert f"writing the report to {dest}" in proc.stdout
    results = json.loads((dest / "results.json").read_text())
    assert "carried_from" not in {nb["name"]: nb for nb in results["notebooks"]}["01_beta"]
    assert leftovers(dest.parent) == []


def test_a_notebook_named_index_is_refused(tmp_path):
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    shutil.copy(FIXTURES / "good" / "01_beta.ipynb", nb_dir / "index.ipynb")
    proc = run_all("--no-setup", "--notebooks-dir", nb_dir, "--out", tmp_path / "rep",
                   timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert "cannot be named 'index'" in proc.stderr and "index.ipynb" in proc.stderr
    assert not (tmp_path / "rep").exists()


def test_a_cell_past_the_timeout_fails_its_notebook_naming_the_cell(tmp_path):
    started = time.monotonic()
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "slow", "--out", tmp_path / "rep",
                   "--cell-timeout", "3", timeout=100)
    assert proc.returncode == 1, explain(proc)
    assert time.monotonic() - started < 90          # the cell sleeps 120 s
    line = ("FAILED: notebook 00_sleeps, cell 2 (In [3]): CellTimeoutError: the cell ran "
            "longer than --cell-timeout 3 s")
    assert line in proc.stderr, explain(proc)
    failed = tmp_path / ".failed-rep"
    assert "CellTimeoutError" in (failed / "index.html").read_text()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["--cell-timeout", "soon"], "--cell-timeout must be a number of seconds"),
    (["-p", "bach_sizes", "[1]"], "notebook 01_beta has no parameter 'bach_sizes' (its "
                                  "parameters: profile, batch_sizes, iters, seed, results_dir)"),
    (["-p", "results_dir", "/tmp"], "parameter 'results_dir' is set by the runner"),
    (["-p", "seed"], "option -p needs a NAME and a VALUE"),
    (["-f", "/nonexistent/params.yaml"], "-f /nonexistent/params.yaml: cannot read it"),
    (["--against", "no-such-ref"], "--against no-such-ref: not a commit of"),
])
def test_bad_parameters_are_refused(args, message, tmp_path):
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", tmp_path / "rep", *args, timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert message in proc.stderr, explain(proc)
    assert not (tmp_path / "rep").exists() and leftovers(tmp_path) == []


def test_parameters_reach_the_notebooks(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("iters: 3\nbatch_sizes: [8]\n")
    out = tmp_path / "rep"
    proc = run_all("--no-setup", "--notebooks-dir", FIXTURES / "good", "--only", "01",
                   "--out", out, "-f", params, "-p", "batch_sizes", "[1, 64]", "-p", "seed", "7")
    assert proc.returncode == 0, explain(proc)
    cells = json.loads((out / "01_beta.ipynb").read_text())["cells"]
    injected = "".join(next(c for c in cells if "injected-parameters"
                            in c["metadata"].get("tags", []))["source"])
    for line in ("iters = 3", "batch_sizes = [1, 64]", "seed = 7", 'profile = "quick"',
                 'results_dir = "."'):
        assert line in injected, injected


def test_against_a_ref_runs_both_sides_and_compares(tmp_path):
    repo = tmp_path / "repo"
    (repo / "nb").mkdir(parents=True)
    shutil.copy(FIXTURES / "good" / "00_alpha.ipynb", repo / "nb")
    shutil.copy(FIXTURES / "good" / "01_beta.ipynb", repo / "nb")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "ref")
    source = (repo / "nb" / "00_alpha.ipynb").read_text()
    (repo / "nb" / "00_alpha.ipynb").write_text(source.replace("12.345678", "24.691356"))
    out = tmp_path / "cmp"
    proc = run_all("--no-setup", "--profile", "quick", "--notebooks-dir", repo / "nb",
                   "--against", "HEAD", "--only", "00", "--out", out)
    assert proc.returncode == 0, explain(proc)
    order = [m.group(1) for m in re.finditer(r"--against: 00_alpha on the (\w+)", proc.stdout)]
    assert order == ["HEAD", "working"], proc.stdout
    a = json.loads((out / "HEAD" / "results.json").read_text())
    b = json.loads((out / "working-tree" / "results.json").read_text())
    assert [nb["name"] for nb in a["notebooks"]] == [nb["name"] for nb in b["notebooks"]] == [
        "00_alpha"]
    moved = {(ra["stage"], ra["bs"]): rb["eager_us"] / ra["eager_us"]
             for ra, rb in zip(a["records"], b["records"])}
    assert all(abs(v - 2.0) < 1e-9 for v in moved.values()), moved
    assert (out / "compare" / "compare.html").is_file()
    assert f"compare page: {out / 'compare' / 'compare.html'}" in proc.stdout
    worktrees = subprocess.run(["git", "-C", str(repo), "worktree", "list"],
                               capture_output=True, text=True).stdout.strip().splitlines()
    assert len(worktrees) == 1, worktrees                  # the ref's checkout is gone
    assert json.loads((out / "against.json").read_text())["ref"] == "HEAD"
