"""Notebook parameters given to ``run_all.sh`` (``-p NAME VALUE``, ``-f params.yaml``).

A value parses as papermill's ``-p`` parses it (``True``/``False``/``None``, integers, floats,
else text), except that a YAML list or mapping (``'[1, 64]'``, ``'{a: 1}'``) arrives as the
list or mapping it spells. ``-f`` is a YAML mapping; ``-p`` overrides it. Each name is checked
against the parameters cell of the notebooks of the run (papermill's ``inspect_notebook``):
papermill itself only warns about an unknown name and runs the defaults, which turns a typo
into a run that silently measured the wrong thing. A name some notebooks declare goes to
those only. ``profile`` and ``results_dir`` are the runner's (``--profile``, the report
folder).
"""
from pathlib import Path

#: Parameters the runner sets itself for every notebook.
RUNNER_PARAMETERS = {"profile": "--profile", "results_dir": "--out"}


class ParameterError(Exception):
    """A parameter the run cannot use: exit 2."""


def parse_value(text):
    """``text`` as papermill's ``-p`` reads it, or the YAML list / mapping it spells."""
    import yaml
    from papermill.cli import _resolve_type

    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise ParameterError(f"value {text!r} is not a valid YAML list or mapping "
                                 f"({' '.join(str(exc).split())})") from None
    return _resolve_type(text)


def read_parameters_file(path):
    """The mapping of a ``-f`` YAML file; a clear error naming the file otherwise."""
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParameterError(f"-f {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"-f {path}: not valid YAML ({' '.join(str(exc).split())})") \
            from None
    if document is None:
        return {}
    if not isinstance(document, dict) or not all(isinstance(k, str) for k in document):
        raise ParameterError(f"-f {path}: must be a mapping of parameter names to values, "
                             f"not {type(document).__name__}")
    return document


def declared_parameters(notebook):
    """The names of a notebook's parameters cell, in order."""
    from papermill import inspect_notebook

    try:
        return list(inspect_notebook(str(notebook)))
    except Exception as exc:  # an unreadable notebook: nothing can be validated against it
        raise ParameterError(f"cannot read the parameters of {notebook}: "
                             f"{type(exc).__name__}: {exc}") from None


def per_notebook(nb_dir, notebooks, values):
    """``{notebook: {name: value}}``: each parameter for the notebooks that declare it.

    Raises ``ParameterError`` for a runner parameter or a name no notebook of the run
    declares (naming the name, the notebooks and what they do declare). Returns also the
    notes for names only some notebooks declare."""
    for name in values:
        if name in RUNNER_PARAMETERS:
            raise ParameterError(f"parameter {name!r} is set by the runner: use "
                                 f"{RUNNER_PARAMETERS[name]} instead")
    if not values:
        return {name: {} for name in notebooks}, []
    declared = {nb: declared_parameters(Path(nb_dir) / f"{nb}.ipynb") for nb in notebooks}
    notes = []
    for name in values:
        having = [nb for nb in notebooks if name in declared[nb]]
        if not having:
            if len(notebooks) == 1:
                nb = notebooks[0]
                raise ParameterError(f"notebook {nb} has no parameter {name!r} (its "
                                     f"parameters: {', '.join(declared[nb]) or 'none'})")
            groups = {}
            for nb in notebooks:
                groups.setdefault(", ".join(declared[nb]) or "none", []).append(nb)
            raise ParameterError(
                f"no notebook of this run has a parameter {name!r} ("
                + "; ".join(f"{' '.join(nbs)}: {names}" for names, nbs in groups.items())
                + ")")
        if len(having) < len(notebooks):
            notes.append(f"parameter {name} goes to {' '.join(having)} only (the other "
                         "notebooks do not declare it)")
    return ({nb: {k: v for k, v in values.items() if k in declared[nb]} for nb in notebooks},
            notes)
