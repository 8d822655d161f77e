"""The report folder's leftovers, links and previous reports (nsa_report.folder), without a run."""
import json
import subprocess
import sys

import pytest

from nsa_report import folder


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _report(path, marker):
    path.mkdir(parents=True)
    (path / "index.html").write_text(marker)
    (path / "results.json").write_text("{}")
    return path


def test_another_reports_only_backup_is_left_alone(tmp_path):
    """A killed ``latest-h200`` run's backup is that report's only copy: a run on ``latest``
    neither restores it as its own nor deletes it."""
    pid = _dead_pid()
    backup = _report(tmp_path / f".old-latest-h200-{pid}", "h200 report")
    scratch = tmp_path / f".tmp-latest-h200-{pid}"
    scratch.mkdir()
    dest = tmp_path / "latest"
    folder.clean_leftovers(dest, tmp_path / "scratch")
    assert not dest.exists()
    assert (backup / "index.html").read_text() == "h200 report"
    assert scratch.is_dir()                   # latest-h200's next run cleans it, not latest's

    _report(dest, "latest report")
    folder.clean_leftovers(dest, tmp_path / "scratch")
    assert (backup / "index.html").read_text() == "h200 report"


def test_own_backup_is_restored_or_removed_after_a_swap(tmp_path):
    pid = _dead_pid()
    dest = tmp_path / "latest"
    _report(tmp_path / f".old-latest-{pid}", "old")
    (tmp_path / f".tmp-latest-{pid}").mkdir()
    folder.clean_leftovers(dest, tmp_path / "scratch")
    assert (dest / "index.html").read_text() == "old"            # restored: the only copy
    assert not (tmp_path / f".tmp-latest-{pid}").exists()

    _report(tmp_path / f".old-latest-{pid}", "older")              # killed after its swap
    folder.clean_leftovers(dest, tmp_path / "scratch")
    assert not (tmp_path / f".old-latest-{pid}").exists()
    assert (dest / "index.html").read_text() == "old"


def test_own_backup_is_kept_when_the_folder_holds_no_report(tmp_path):
    pid = _dead_pid()
    dest = tmp_path / "latest"
    dest.mkdir()                                                   # emptied by hand
    backup = _report(tmp_path / f".old-latest-{pid}", "only copy")
    folder.clean_leftovers(dest, tmp_path / "scratch")
    assert (backup / "index.html").read_text() == "only copy"


def test_a_link_out_is_followed(tmp_path):
    target = _report(tmp_path / "real", "r")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert folder.resolve_destination(link, False) == target


def test_a_dangling_link_out_is_refused(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(folder.RefusedError, match="symbolic link"):
        folder.resolve_destination(link, False)
    assert link.is_symlink() and not (tmp_path / "gone").exists()


@pytest.mark.parametrize("document, field", [
    ([1, 2], "is a list, not an object"),
    ({"notebooks": "00_a"}, "notebooks is text"),
    ({"notebooks": ["00_a"]}, "notebooks[0] is text"),
    ({"notebooks": [{"name": "00_a", "status": "ok"}], "environment": "h100"},
     "environment is text"),
    ({"notebooks": [{"name": "00_a", "status": "ok", "figures": ["/abs/fig.png"]}]},
     "notebooks[0].figures[0]"),
    ({"notebooks": [{"name": "00_a", "status": "ok", "html": "../x.html"}]},
     "notebooks[0].html"),
    ({"notebooks": [{"status": "ok"}]}, "notebooks[0].name"),
])
def test_a_malformed_previous_report_is_refused(tmp_path, document, field):
    dest = tmp_path / "rep"
    dest.mkdir()
    (dest / "results.json").write_text(json.dumps(document))
    with pytest.raises(folder.RefusedError) as caught:
        folder.previous_report(dest)
    message = str(caught.value)
    assert str(dest / "results.json") in message and field in message, message


def test_an_unreadable_previous_report_is_refused(tmp_path):
    dest = tmp_path / "rep"
    dest.mkdir()
    (dest / "results.json").write_text("{not json")
    with pytest.raises(folder.RefusedError, match="not valid JSON"):
        folder.previous_report(dest)
