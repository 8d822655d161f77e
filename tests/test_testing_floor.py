"""``nsa_kernels.testing`` is the lowest floor of the checks: importing it (as a notebook does
to check any stage) loads nothing of ``compat``, ``modes`` or stages 5-6 beyond what
``import nsa_kernels`` itself loads; the garbage-length registry loads them on first use."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import nsa_kernels.testing

#: Module prefixes the floor must not load (stages 5-6 come with ``import nsa_kernels``).
ABOVE_THE_FLOOR = ("nsa_kernels.compat", "nsa_kernels.modes", "nsa_kernels.testing.garbage",
                   "nsa_kernels.stages.stage5_zero_sync",
                   "nsa_kernels.stages.stage6_full_pipeline")

_PROBE = """
import json, sys
import nsa_kernels
before = set(sys.modules)
import nsa_kernels.testing as testing
testing.check_fill(nsa_kernels.STAGES["triton_bsearch"], *testing.lengths([2, 0], [3, 1]), 8)
floor = sorted(set(sys.modules) - before)
testing.SYNC_FREE_ENTRY_POINTS
registry = sorted(set(sys.modules) - before)
print(json.dumps({"floor": floor, "registry": registry}))
"""


def _loaded(modules, prefixes):
    return [m for m in modules if m.startswith(prefixes)]


def test_importing_the_floor_loads_no_mode_compat_or_registry():
    child = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                           timeout=300, check=True)
    added = json.loads(child.stdout.strip().splitlines()[-1])
    assert _loaded(added["floor"], ABOVE_THE_FLOOR) == [], added["floor"]
    # the probe sees such imports: the registry, asked for by name, brings them in
    assert "nsa_kernels.modes" in added["registry"], added["registry"]
    assert "nsa_kernels.compat.sglang" in added["registry"], added["registry"]


def test_the_floor_names_no_stage_5_6_mode_or_compat_import():
    """Also what ``import nsa_kernels`` would hide: the floor's source imports none of them."""
    source = Path(nsa_kernels.testing.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            imported |= {base} | {f"{base}.{alias.name}".replace("..", ".") for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    banned = ("compat", "modes", "stages", "stage5_zero_sync", "stage6_full_pipeline")
    named = sorted(name for name in imported
                   if any(part in banned for part in name.lstrip(".").split(".")))
    assert named == [], named


def test_registry_names_stay_reachable_from_the_floor():
    from nsa_kernels.testing import GARBAGE_CASES, SYNC_FREE_ENTRY_POINTS, garbage
    assert SYNC_FREE_ENTRY_POINTS is garbage.SYNC_FREE_ENTRY_POINTS
    assert GARBAGE_CASES is garbage.GARBAGE_CASES
