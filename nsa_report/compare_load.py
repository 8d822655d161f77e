"""Reading the two ``results.json`` of a compare, refusing what it cannot compare truthfully.

Every problem is a ``CompareInputError`` naming the file and the field, which the CLI prints
and exits 2 on: a document that is not an object, records that are not a list, a record that
is not an object or has none of the times, a time (or its spread) that is not a finite number.
A time that is null was not measured; zero or negative times are kept and left out of the
ratios (``compare_moves``).
"""
import json
import math
from pathlib import Path

from .fmt import is_num

#: The times a record can carry (µs), each optionally with its spread ``<time>_p20/_p80``.
TIMES = ("eager_us", "graph_us", "throughput_us", "host_us", "kernel_graph_us", "best_graph_us")
SPREADS = ("p20", "p80")


class CompareInputError(ValueError):
    """A results document that cannot be compared; the message names the file and field."""


def _check_number(path, where, field, value):
    if value is None:
        return
    if not is_num(value) or not math.isfinite(value):
        raise CompareInputError(f"{path}: {where}: {field} is {json.dumps(value)[:60]}, "
                                "not a finite number (or null)")


def _where(i, record):
    stage = record.get("stage")
    return f"records[{i}]" + (f" (stage {stage!r})" if stage is not None else "")


def check_record(path, i, record):
    if not isinstance(record, dict):
        raise CompareInputError(f"{path}: records[{i}] is {type(record).__name__}, "
                                "not an object")
    where = _where(i, record)
    if "stage" not in record:
        raise CompareInputError(f"{path}: {where} has no stage")
    if not any(t in record for t in TIMES):
        raise CompareInputError(f"{path}: {where} has none of the times "
                                f"({', '.join(TIMES)})")
    for t in TIMES:
        for field in (t, *(f"{t}_{s}" for s in SPREADS)):
            _check_number(path, where, field, record.get(field))


def check_document(path, document):
    """``document`` when it is a results document compare can read; else CompareInputError."""
    if not isinstance(document, dict):
        raise CompareInputError(f"{path}: the document is {type(document).__name__}, "
                                "not an object")
    records = document.get("records")
    if not isinstance(records, list):
        raise CompareInputError(f"{path}: records is {type(records).__name__}, not a list")
    env = document.get("environment", {})
    if env is not None and not isinstance(env, dict):
        raise CompareInputError(f"{path}: environment is {type(env).__name__}, not an object")
    for i, record in enumerate(records):
        check_record(path, i, record)
    return document


def load_report(folder):
    """The checked ``results.json`` of a report folder."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise CompareInputError(f"{path} not found (not a report folder)")
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CompareInputError(f"{path}: not readable JSON ({exc})") from None
    return check_document(path, document)
