"""notebook_params: papermill's string parameters parsed, every parameter checked, results kept
out of notebooks/."""
import json
from pathlib import Path

from nsa_kernels.bench import params
from nsa_kernels.bench.params import INTERACTIVE_DIR, notebook_params
from nsa_kernels.bench.workloads import PROFILES

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Every notebook: each takes its parameters through notebook_params.
OWN_NOTEBOOKS = [
    "00_python_baseline",
    "01_triton_fused",
    "02_triton_inplace",
    "03_triton_bsearch",
    "04_triton_autotuned",
    "05_zero_sync",
    "06_full_pipeline",
    "07_summary",
    "08_scaling",
    "09_decode_verify",
    "10_extend",
    "11_modes_vs_peers",
]


def papermill_typed(text):
    """What ``papermill -p NAME TEXT`` hands the notebook (its own CLI conversion)."""
    from papermill.cli import _resolve_type
    return _resolve_type(text)


@pytest.mark.parametrize("text, expected", [
    ("[1, 64]", [1, 64]), ("1,64", [1, 64]), ("(8, 32)", [8, 32]), ("64", [64]),
    ("[4096]", [4096]), (" [ 2 ,3 ] ", [2, 3]),
])
def test_batch_sizes_given_as_papermill_passes_them(text, expected):
    p = notebook_params(batch_sizes=papermill_typed(text))
    assert p.batch_sizes == expected
    assert p.settings["draft_bs"] == expected


def test_numbers_given_as_text_or_typed():
    p = notebook_params(iters=papermill_typed("200"), seed="7")
    assert (p.iters, p.seed) == (200, 7)
    assert p.settings["iters"] == 200
    assert notebook_params(iters="12").iters == 12
    assert notebook_params(iters=3.0).iters == 3


def test_defaults_follow_the_profile():
    p = notebook_params(profile="quick")
    assert p.batch_sizes is None and p.iters is None
    assert p.settings == PROFILES["quick"]
    assert notebook_params(profile="full").settings["draft_bs"] == PROFILES["full"]["draft_bs"]


def test_profile_none_picks_by_device():
    assert notebook_params(profile=None).profile == ("full" if params.ON_GPU else "quick")


@pytest.mark.parametrize("name, value", [
    ("profile", "fast"), ("profile", 3),
    ("batch_sizes", "[]"), ("batch_sizes", "[0, 4]"), ("batch_sizes", "[-1]"),
    ("batch_sizes", "[1.5]"), ("batch_sizes", "['a']"), ("batch_sizes", "lots"),
    ("batch_sizes", "[True]"), ("batch_sizes", "[[1]]"), ("batch_sizes", ""),
    ("batch_sizes", {"bs": 1}),
    ("iters", "0"), ("iters", "-3"), ("iters", "many"), ("iters", 2.5), ("iters", True),
    ("seed", "x"), ("seed", -1), ("seed", None), ("seed", 1.5),
    ("results_dir", 5), ("results_dir", ""), ("results_dir", "   "),
])
def test_bad_value_names_the_parameter_and_the_value(name, value):
    with pytest.raises(ValueError) as err:
        notebook_params(**{name: value})
    message = str(err.value)
    assert message.startswith(name), message
    assert repr(value) in message or name == "results_dir", message


def test_zero_batch_size_only_where_allowed():
    with pytest.raises(ValueError, match="batch_sizes"):
        notebook_params(batch_sizes="[0, 2]")
    assert notebook_params(batch_sizes="[0, 2]", min_batch_size=0).batch_sizes == [0, 2]


def test_literal_eval_never_runs_code(tmp_path):
    marker = tmp_path / "ran"
    text = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    with pytest.raises(ValueError, match="batch_sizes"):
        notebook_params(batch_sizes=text)
    assert not marker.exists()


def test_results_dir_defaults_to_the_ignored_interactive_folder(tmp_path):
    assert notebook_params().results_dir == INTERACTIVE_DIR
    assert INTERACTIVE_DIR.relative_to(ROOT / "reports")
    assert notebook_params(results_dir=str(tmp_path)).results_dir == tmp_path
    file = tmp_path / "f"
    file.write_text("")
    with pytest.raises(ValueError, match="results_dir"):
        notebook_params(results_dir=file)


def test_extra_parameters_are_parsed_and_readable_as_attributes():
    p = notebook_params(max_tokens="[1024, 4096]", label="run-a")
    assert p.max_tokens == [1024, 4096]
    assert p.label == "run-a"
    assert p.extra == {"max_tokens": [1024, 4096], "label": "run-a"}
    with pytest.raises(AttributeError):
        p.not_a_parameter  # noqa: B018


def _parameters_cell(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{name}: {len(cells)} parameters cells"
    return nb, cells[0]


@pytest.mark.parametrize("name", OWN_NOTEBOOKS)
def test_help_notebook_explains_every_parameter(name):
    """``papermill --help-notebook`` shows each parameter's inline comment as its help."""
    import papermill

    inspected = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    assert {"profile", "batch_sizes", "iters", "seed", "results_dir"} <= set(inspected)
    missing = [k for k, v in inspected.items() if len(v["help"].strip()) < 10]
    assert not missing, f"{name}: parameters without help: {missing}"
    assert inspected["results_dir"]["default"] == "None"


@pytest.mark.parametrize("name", OWN_NOTEBOOKS)
def test_notebook_is_clean_and_checks_its_parameters(name):
    nb, cell = _parameters_cell(name)
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            assert c.get("outputs") == [] and c.get("execution_count") is None, \
                f"{name}: a code cell carries outputs"
    index = nb["cells"].index(cell)
    after = "".join(nb["cells"][index + 1]["source"])
    assert "notebook_params(" in after, f"{name}: the cell after the parameters does not check them"
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "(issue" not in text.lower(), f"{name}: a heading names an issue"
    assert "kernel[grid](" not in text, f"{name}: markdown renders kernel[grid](...) as a link"


def test_papermill_run_with_a_list_parameter_writes_outside_the_notebook_folder(tmp_path):
    """The reported failure, end to end: ``papermill ... -p batch_sizes '[1, 64]'`` from the
    notebook's folder, no results_dir; the notebook sees ints and writes under reports/."""
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    params_cell = nbformat.v4.new_code_cell(
        'profile = "quick"  # run profile\nbatch_sizes = None  # batch sizes\n'
        "iters = None  # calls\n"
        "seed = 0  # seed\nresults_dir = None  # output folder"
    )
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell(
        "from nsa_kernels.bench.params import notebook_params\n"
        "p = notebook_params(profile=profile, batch_sizes=batch_sizes, iters=iters, seed=seed, "
        "results_dir=results_dir)\n"
        "assert p.batch_sizes == [1, 64] and p.settings['draft_bs'] == [1, 64], p\n"
        "assert sum(p.batch_sizes) == 65\n"
        "print(p.results_dir)")]
    source = tmp_path / "probe.ipynb"
    nbformat.write(nb, source)
    out = papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), cwd=str(tmp_path),
                                     parameters={"batch_sizes": papermill_typed("[1, 64]")},
                                     kernel_name="python3", progress_bar=False)
    printed = "".join(o.get("text", "") for o in out.cells[-1].outputs).strip()
    assert printed == str(INTERACTIVE_DIR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ipynb", "probe.ipynb"]


@pytest.mark.parametrize("name", OWN_NOTEBOOKS)
def test_every_parameter_has_a_type_papermill_reads(name):
    """``papermill --help-notebook`` names each parameter's type (not "Unknown type")."""
    import papermill

    inspected = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    untyped = [k for k, v in inspected.items() if v["inferred_type_name"] in ("None", "")]
    assert not untyped, f"{name}: parameters without a type: {untyped}"
    assert inspected["profile"]["default"] == "None", f"{name}: profile must default to None"


def test_default_profile_is_the_devices(monkeypatch):
    """A notebook run without a profile (Lab, nbconvert) measures the GPU's sizes on a GPU."""
    monkeypatch.setattr(params, "params_on_gpu", lambda: True)
    assert notebook_params().profile == "full"
    monkeypatch.setattr(params, "params_on_gpu", lambda: False)
    assert notebook_params().profile == "quick"


def test_batch_sizes_drive_every_sweep_of_the_profile():
    settings = notebook_params(profile="full", batch_sizes="[1, 64]").settings
    assert settings["draft_bs"] == [1, 64] and settings["scaling_bs"] == [1, 64]
    assert notebook_params(profile="full").settings["scaling_bs"] == PROFILES["full"]["scaling_bs"]
