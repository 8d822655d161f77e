"""Notebook parameters: parsed, checked, resolved, in one call after the parameters cell.

``papermill -p NAME VALUE`` passes ``True``/``False``/``None``, integers and floats typed, and
everything else as a string: ``-p batch_sizes '[1, 64]'`` arrives as the text ``'[1, 64]'``.
Every notebook therefore starts with::

    p = notebook_params(profile=profile, batch_sizes=batch_sizes, iters=iters, seed=seed,
                        results_dir=results_dir)

which accepts those strings (``'[1, 64]'``, ``'1,64'``, ``'64'``), parses them with
``ast.literal_eval`` (literals only: nothing is executed), and raises ``ValueError`` naming the
parameter and the value it got. ``results_dir=None`` (Lab, nbconvert, papermill without
``-p results_dir``) resolves to ``reports/interactive/`` at the repository root, a folder git
ignores, so running a notebook never writes into ``notebooks/``.
"""
import ast
from dataclasses import dataclass, field
from pathlib import Path

from .harness import ON_GPU
from .results import REPO_ROOT
from .workloads import PROFILES, profile_settings

#: Where interactive runs write their results and plots (ignored by git).
INTERACTIVE_DIR = REPO_ROOT / "reports" / "interactive"


@dataclass(frozen=True)
class NotebookParams:
    profile: str
    batch_sizes: list | None
    iters: int | None
    seed: int
    results_dir: Path
    #: ``workloads.profile_settings`` for the profile, with ``batch_sizes`` and ``iters`` applied.
    settings: dict
    extra: dict = field(default_factory=dict)

    def __getattr__(self, name):
        # Notebook-specific parameters (``**extra``) read like the common ones: ``p.max_tokens``.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)


def parse_literal(name, value):
    """``value`` unchanged unless it is a string, else the Python literal it spells.

    A bare comma list (``'1,64'``) reads as a tuple, as in Python source. Strings that are not a
    literal (``'quick'``) stay strings.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        raise ValueError(f"{name} is empty ({value!r}): give a value or leave it out")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def _whole_number(name, value, minimum, what, raw=None):
    """``value`` as an int >= ``minimum``; the error quotes ``raw``, the value as given."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be {what}, got {(value if raw is None else raw)!r}")
    return value


def check_profile(profile):
    """``'quick'`` or ``'full'``; ``None`` (every notebook's default, so that a notebook opened
    in Lab on a GPU measures the GPU's sizes) picks ``full`` on a GPU and ``quick`` otherwise."""
    if profile is None:
        return "full" if params_on_gpu() else "quick"
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)} or None, got {profile!r}")
    return profile


def params_on_gpu():
    """Whether kernels run on a GPU (not the interpreter): what ``profile=None`` resolves by."""
    return ON_GPU


def check_batch_sizes(batch_sizes, minimum=1):
    """A non-empty list of ints >= ``minimum``, from a list, a tuple, an int or their text."""
    raw = batch_sizes
    batch_sizes = parse_literal("batch_sizes", batch_sizes)
    if batch_sizes is None:
        return None
    if isinstance(batch_sizes, (int, float)) and not isinstance(batch_sizes, bool):
        batch_sizes = [batch_sizes]
    what = f"a non-empty list of integers >= {minimum} (e.g. -p batch_sizes '[1, 64]')"
    if not isinstance(batch_sizes, (list, tuple)) or not batch_sizes:
        raise ValueError(f"batch_sizes must be {what}, got {raw!r}")
    try:
        return [_whole_number("batch_sizes", bs, minimum, what) for bs in batch_sizes]
    except ValueError:
        raise ValueError(f"batch_sizes must be {what}, got {raw!r}") from None


def check_iters(iters):
    value = parse_literal("iters", iters)
    if value is None:
        return None
    return _whole_number("iters", value, 1, "an integer >= 1 (timed calls per measurement)", iters)


def check_seed(seed):
    return _whole_number("seed", parse_literal("seed", seed), 0, "an integer >= 0", seed)


def check_results_dir(results_dir):
    if results_dir is None:
        return INTERACTIVE_DIR
    if not isinstance(results_dir, (str, Path)) or not str(results_dir).strip():
        raise ValueError(f"results_dir must be a folder path or None, got {results_dir!r}")
    path = Path(results_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"results_dir must be a folder, but {str(path)!r} is a file")
    return path


def notebook_params(profile=None, batch_sizes=None, iters=None, seed=0, results_dir=None,
                    min_batch_size=1, **extra):
    """Check every parameter and return them resolved, with the profile's settings.

    ``batch_sizes`` replaces every batch-size list of the profile (``draft_bs`` and the
    scaling sweep's ``scaling_bs``). ``min_batch_size=0`` lets a notebook accept empty
    batches. ``extra`` parameters (a notebook's own) are parsed as literals when given as
    text and returned in ``.extra``.
    """
    profile = check_profile(profile)
    batch_sizes = check_batch_sizes(batch_sizes, min_batch_size)
    iters = check_iters(iters)
    settings = profile_settings(profile, draft_bs=batch_sizes, scaling_bs=batch_sizes,
                                iters=iters)
    return NotebookParams(profile=profile, batch_sizes=batch_sizes, iters=iters,
                          seed=check_seed(seed), results_dir=check_results_dir(results_dir),
                          settings=settings,
                          extra={k: parse_literal(k, v) for k, v in extra.items()})
