"""Every notebook, executed headless by the real ./run_all.sh in the quick profile.

A notebook that breaks fails this test (and CI). The quick profile is sized to finish in
under 15 minutes on a 2-core CPU with the Triton interpreter. Progress (one line per notebook)
goes to the terminal whether or not pytest captures output (``-s`` is not needed).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 15 * 60
PROGRESS = ("==> [", "==> profile", "FAILED:")

pytestmark = pytest.mark.notebooks


def progress_printer(config):
    """Write to the terminal past pytest's capture, as ``capsys.disabled()`` does."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:
        return lambda line: None

    def show(line):
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"  [notebooks] {line}")
    return show


def is_progress(line):
    return line.startswith(PROGRESS) or (line.startswith("==> ") and ": ok (" in line)


@pytest.mark.skipif(not NOTEBOOKS, reason="notebooks/ has no .ipynb yet: nothing to execute")
def test_quick_profile_runs_every_notebook(tmp_path, request):
    from nsa_kernels import STAGES

    import torch

    show = progress_printer(request.config)
    out = tmp_path / "quick"
    log_path = tmp_path / "run_all.log"
    env = {**os.environ, "NSA_PYTHON": sys.executable}
    started = time.monotonic()
    show(f"running {len(NOTEBOOKS)} notebooks (quick profile; up to {TIMEOUT_S // 60} min)")
    proc = subprocess.Popen(["bash", str(ROOT / "run_all.sh"), "--no-setup", "--profile",
                             "quick", "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    timed_out = threading.Event()

    def stop():
        timed_out.set()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(TIMEOUT_S, stop)
    watchdog.start()
    try:
        with open(log_path, "w") as log:
            for line in proc.stdout:
                log.write(line)
                if is_progress(line):
                    show(f"{time.monotonic() - started:5.0f}s {line.rstrip()}")
        rc = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    elapsed = time.monotonic() - started
    output = log_path.read_text(errors="replace")
    failures = "\n".join(line for line in output.splitlines() if line.startswith("FAILED:"))
    assert not timed_out.is_set(), (f"the quick profile took over {TIMEOUT_S}s; "
                                    f"output tail:\n{output[-6000:]}")
    assert rc == 0, f"run_all.sh exit {rc}\n{failures}\noutput tail:\n{output[-6000:]}"

    for nb in NOTEBOOKS:
        assert (out / f"{nb.stem}.ipynb").is_file(), f"no executed {nb.stem}.ipynb"
        assert (out / f"{nb.stem}.html").is_file(), f"no {nb.stem}.html"
    assert (out / "index.html").is_file()

    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok"
    assert all(nb["status"] == "ok" for nb in results["notebooks"]), results["notebooks"]
    stages = {record["stage"] for record in results["records"]}
    wanted = set(STAGES) | {"empty_kernel"}
    assert wanted <= stages, f"no records for {sorted(wanted - stages)}"

    interpreter = not torch.cuda.is_available()
    assert results["environment"]["interpreter"] == interpreter
    wrong = [(r.get("notebook"), r.get("stage"), r.get("interpreter"))
             for r in results["records"] if r.get("interpreter") != interpreter]
    assert not wrong, f"records whose interpreter flag is not {interpreter}: {wrong[:10]}"
    show(f"quick profile: {len(NOTEBOOKS)} notebooks, {len(results['records'])} records, "
         f"{elapsed:.0f}s")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_alone_in_the_quick_profile(notebook, tmp_path):
    """One notebook, headless with papermill in the quick profile, writes its results
    fragment with records: ``pytest tests/test_notebooks.py -k 09`` runs notebook 09 alone."""
    import papermill
    import torch

    papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name),
                               parameters={"profile": "quick", "results_dir": str(tmp_path)},
                               cwd=str(ROOT / "notebooks"), kernel_name="python3",
                               progress_bar=False, execution_timeout=TIMEOUT_S)
    fragment = json.loads((tmp_path / f"results_{notebook.stem}.json").read_text())
    assert fragment["notebook"] == notebook.stem
    # no records only where the notebook says what it skipped on this machine, and why
    assert fragment["records"] or any(
        "record" in s["what"] for s in fragment.get("extra", {}).get("skipped", [])), \
        "no records and no skipped entry saying why"
    interpreter = not torch.cuda.is_available()
    assert all(r.get("interpreter", interpreter) == interpreter for r in fragment["records"])
    for figure in fragment["figures"]:
        assert (tmp_path / figure).is_file(), figure
