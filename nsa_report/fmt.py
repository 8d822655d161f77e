"""How numbers look on every page: 3 significant digits, thousands separators, a dash for None."""
import json
import math


def fmt(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1e15 or mag < 1e-4:
            return f"{value:.3g}"
        if mag >= 1000:
            digits = int(math.floor(math.log10(mag))) - 2
            return f"{int(round(value, -digits)):,}"
        return f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def is_num(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ratio(numerator, denominator):
    """``numerator / denominator`` when both are positive numbers, else None."""
    if is_num(numerator) and is_num(denominator) and numerator > 0 and denominator > 0:
        return numerator / denominator
    return None


def fmt_ratio(value):
    return "—" if value is None else f"{value:.2f}x"
