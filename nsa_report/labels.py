"""How a field reads in a table header: words and units (``host µs``, not ``host_us``)."""
import ast
import re

WORDS = {"eager_us": "eager µs", "graph_us": "graph µs", "throughput_us": "throughput µs",
         "host_us": "host µs", "kernel_graph_us": "kernel graph µs",
         "best_graph_us": "best graph µs", "floor_us": "floor µs", "bs": "bs (requests)",
         "width": "width (columns)", "next_n": "next_n (draft tokens)"}


def label(field):
    """``host_us`` -> ``host µs``; anything else (a stage's name: it is what one searches
    for) unchanged."""
    text = str(field)
    if text in WORDS:
        return WORDS[text]
    if text.endswith("_us") and text.isidentifier():
        return text[:-3].replace("_", " ") + " µs"
    return text


#: An absolute path (``/root/x/.peers/sglang``): a machine's folders, not the reader's.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+-]+/)+[\w.+-]*")


def without_paths(text):
    """``text`` with each absolute path cut to its last part (``…/sglang``)."""
    return ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def as_text(value):
    """A value as a reader wants it: a mapping (or its Python text, as some notebooks store
    it) as ``key: value, key: value``; text without absolute paths; anything else unchanged."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        value = parsed if isinstance(parsed, dict) else value
    if isinstance(value, dict):
        value = ", ".join(f"{k}: {v}" for k, v in value.items())
    return without_paths(value) if isinstance(value, str) else value
