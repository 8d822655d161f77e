"""The command line every benchmark module shares: ``python -m nsa_kernels.bench.<name>``.

* ``parser(doc, module)``: an ``argparse`` parser described by the module's docstring (first
  line as the description, the rest as the epilog) with ``--out DIR`` for the JSON it
  writes (default ``$OUT``, the folder the device tool brings back; nothing when unset);
* ``write_json(out, name, payload)``: ``payload`` as ``out/name`` (folders made, values JSON
  cannot hold written as text); nothing without ``out``;
* ``verdict(ok)``: the ``PASS`` / ``FAIL`` / ``NOT MEASURED`` word of a result line;
* ``run(main)``: exits with the status ``main()`` returns (0: every check passed).

The modules: ``bench_modes`` (every mode against SGLang and vLLM, notebook 11's sweep),
``perf_modes`` (launch-shape variants of the mode kernels at small bs), ``launch_cost`` (every
floor and launch path of one launch), ``host_cost_modes`` (host cost per call of the modes'
entry points), ``seed_table`` (the seed's table, measured fairly).
"""
import argparse
import json
import os
import sys
from pathlib import Path


def parser(doc, module):
    first, _, rest = (doc or "").strip().partition("\n")
    out = argparse.ArgumentParser(prog=f"python -m {module}", description=first,
                                  epilog=rest.strip() or None,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument("--out", default=os.environ.get("OUT") or None,
                     help="folder for the JSON results (default: $OUT; none when unset)")
    return out


def write_json(out, name, payload, quiet=False):
    """``payload`` as JSON in ``out/name``; the path, or None when ``out`` is not set."""
    if not out:
        return None
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))
    if not quiet:
        print(f"wrote {path}")
    return path


def verdict(ok):
    return {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[ok]


def run(main):
    sys.exit(main())
