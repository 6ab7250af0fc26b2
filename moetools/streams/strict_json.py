"""Every JSON text a tool writes is strict JSON (RFC 8259): never the tokens NaN, Infinity, -Infinity.

    from moetools.streams.strict_json import dumps
    handle.write(dumps(record) + "\\n")      # NonFiniteJSONError naming the first non-finite field

The one place the tools turn values into JSON text (streams in JSON lines, experts.json,
tune.json, training logs, model configs, the report's inline data, caches): ``json.dumps`` with
``allow_nan=False``. A non-finite number is a wrong number, which formats/README.md never lets a
record hold; a writer that meets one stops (exit 1) and names where it is, rather than writing a
file that ``jq`` and other strict parsers refuse.
"""

from __future__ import annotations

import json
import math

from ..errors import MoetoolsError


class NonFiniteJSONError(MoetoolsError, ValueError):
    """A value to be written as JSON holds NaN or ±inf (exit 1: the writing tool's failure)."""


def first_non_finite(value, path: str = "$") -> str | None:
    """The JSON path of the first NaN/±inf inside ``value`` (maps, lists, floats, numpy arrays), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} = {value!r}"
    if isinstance(value, dict):
        for key, inner in value.items():
            found = first_non_finite(inner, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            found = first_non_finite(inner, f"{path}[{index}]")
            if found:
                return found
        return None
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if kind == "f":
        import numpy as np

        array = np.asarray(value)
        if not np.isfinite(array).all():
            return f"{path} (an array holding NaN or ±inf)"
    return None


def dumps(value, **kwargs) -> str:
    """``json.dumps(value, allow_nan=False, **kwargs)``; :class:`NonFiniteJSONError` names a non-finite value."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError as error:
        where = first_non_finite(value)
        if where is None and "JSON compliant" not in str(error):
            raise
        raise NonFiniteJSONError(f"refusing to write a non-finite number as JSON: {where or error}") from None


def strict_loads(text: str):
    """``json.loads`` that refuses the tokens NaN, Infinity and -Infinity (ValueError)."""
    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def read_object(text: str) -> tuple[dict | None, str | None]:
    """``(object, None)`` for a JSON object, else ``(None, why)``: "not valid JSON (…)" or "not a JSON object".

    The one wording of the tools' JSON-object inputs (corpus lines, chat and choice files, domain files);
    the place of a syntax error is given when ``text`` spans several lines.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        where = f" at line {error.lineno} column {error.colno}" if "\n" in text.strip() else ""
        return None, f"not valid JSON ({error.msg}{where})"
    if not isinstance(value, dict):
        return None, "not a JSON object"
    return value, None


__all__ = ["NonFiniteJSONError", "dumps", "first_non_finite", "read_object", "strict_loads"]
