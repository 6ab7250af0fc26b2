"""One schema per stream kind: the fields of formats/<kind>.md stated in code.

Every kind (trace, samples, labels, scores, experts, eval, ...) has one module in
``moetools/streams/schemas/`` defining a :class:`Schema` subclass registered with
:func:`register_schema`. The reader (``StreamReader(..., validate=True)``),
``moe-cat --check``, every consuming tool and the writers' tests all go through
:func:`schema_for`, so a field-level rule lives in exactly one place::

    @register_schema
    class ExpertsSchema(Schema):
        kind = "experts"
        record_types = ("experts",)

        def check_header(self, header): ...
        def check_record(self, record, header, number): ...   # FormatError naming the field

A kind with no schema module is framed-checked only (header, end record, counts).

What a schema requires and what it checks only when present: the fields a consumer
needs are *required*; every other field of the spec is checked *when present* (a
stage of one's own may leave provenance out). Fields and record types the spec does
not list are ignored (formats/README.md: readers MUST ignore unknown fields and MAY
skip unknown record types), so a newer writer's additions never break an older reader.
"""

from __future__ import annotations

import importlib
import math
import pkgutil

from ..errors import FormatError

_SCHEMAS: dict[str, type[Schema]] = {}
_LOADED = False
_INSTANCES: dict[str, Schema] = {}


class Schema:
    """Base class: the checks of one stream kind. Subclasses override what their spec says."""

    kind: str = ""
    #: the data record types a stream of this kind may hold (``type`` field)
    record_types: tuple[str, ...] = ()

    def check_header(self, header: dict) -> None:
        """Raise :class:`FormatError` unless the kind-specific header fields are valid."""

    def check_record(self, record: dict, header: dict, number: int | None = None) -> None:
        """Raise :class:`FormatError` unless ``record`` is valid in a stream with this ``header``.

        Dispatches a record whose ``type`` is in :attr:`record_types` to the method
        ``check_<type>`` (``-`` read as ``_``); records of other types are ignored
        (formats/README.md: a reader MAY skip record types it does not use).
        """
        kind = record.get("type")
        if kind in self.record_types:
            getattr(self, "check_" + kind.replace("-", "_"))(record, header, number)

    def check_end(self, end: dict, header: dict) -> None:
        """Raise :class:`FormatError` unless the end record's kind-specific fields are valid."""


def register_schema(cls: type[Schema]) -> type[Schema]:
    """Class decorator: make ``cls`` the schema of ``cls.kind`` (a later registration wins)."""
    if not (isinstance(cls, type) and issubclass(cls, Schema)) or not cls.kind:
        raise TypeError("register_schema expects a Schema subclass with a kind")
    _SCHEMAS[cls.kind] = cls
    return cls


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import schemas

    for module in pkgutil.iter_modules(schemas.__path__):
        importlib.import_module(f"{schemas.__name__}.{module.name}")


def schema_for(kind: str) -> Schema | None:
    """The schema instance of ``kind``, or None when the kind has none."""
    _load_builtin()
    cls = _SCHEMAS.get(kind)
    if cls is None:
        return None
    instance = _INSTANCES.get(kind)
    if type(instance) is not cls:
        instance = _INSTANCES[kind] = cls()
    return instance


def known_kinds() -> list[str]:
    _load_builtin()
    return sorted(_SCHEMAS)


# -- helpers the schema modules share ------------------------------------------------------------

def where(kind: str, number: int | None, extra: str = "") -> str:
    text = f"{kind} record" + ("" if number is None else f" {number}")
    return f"{text} ({extra})" if extra else text


def need(condition: bool, place: str, message: str) -> None:
    if not condition:
        raise FormatError(f"{place}: {message}")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An integer or a *finite* float: NaN and ±inf are never numbers of a moetools record (formats/README.md)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def is_non_finite(value) -> bool:
    """A float that is NaN, inf or -inf."""
    return isinstance(value, float) and not math.isfinite(value)


def number_problem(value, what: str = "a number") -> str:
    """Why ``value`` is not ``what``: names NaN and ±inf as such (the finite rule of formats/README.md)."""
    if is_non_finite(value):
        return f"is {value!r}, not a finite number (NaN and ±inf are refused)"
    return f"is not {what}"


def need_number(value, place: str, name: str, *, nullable: bool = False) -> None:
    """``value`` is a finite number (or null when ``nullable``); FormatError naming ``name`` otherwise."""
    if (nullable and value is None) or is_number(value):
        return
    raise FormatError(f"{place}: {name} {number_problem(value, 'a number or null' if nullable else 'a number')}")


def check_finite_array(value, place: str, name: str) -> None:
    """A float array holds no NaN or ±inf: one ``np.isfinite(...).all()`` per array (readers stay fast)."""
    import numpy as np

    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = np.flatnonzero(~np.isfinite(value.reshape(-1)))
        first = np.unravel_index(int(bad[0]), value.shape) if value.ndim else ()
        raise FormatError(f"{place}: '{name}' holds {len(bad)} non-finite value(s) (NaN or ±inf), the first "
                          f"{float(value.reshape(-1)[bad[0]])!r} at index {[int(i) for i in first]}")


# Field checks: each raises FormatError("{place}: '{name}' must be ...") naming the field and the
# rule of the spec; ``optional=True`` accepts a missing field (checked only when present).

_MISSING = object()


def _value(record: dict, name: str, place: str, optional: bool):
    value = record.get(name, _MISSING) if isinstance(record, dict) else _MISSING
    if value is _MISSING and not optional:
        raise FormatError(f"{place}: '{name}' is missing")
    return value


def field_int(record: dict, name: str, place: str, *, minimum: int | None = 0, maximum: int | None = None,
              optional: bool = False, nullable: bool = False):
    """An integer field (bools are not integers) within ``[minimum, maximum]``; returns it."""
    value = _value(record, name, place, optional)
    if value is _MISSING or (nullable and value is None):
        return None
    if minimum is not None and maximum is not None:
        bounds = f" in [{minimum}, {maximum}]"
    else:
        bounds = f" >= {minimum}" if minimum is not None else (f" <= {maximum}" if maximum is not None else "")
    need(is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum),
         place, f"'{name}' must be an integer{bounds}{' or null' if nullable else ''}, got {value!r}")
    return value


def _typed(record: dict, name: str, place: str, optional: bool, nullable: bool, ok, what: str, got=repr):
    """The field's value when ``ok(value)``; None when missing (``optional``) or null (``nullable``);
    FormatError "'name' must be WHAT, got GOT(value)" otherwise."""
    value = _value(record, name, place, optional)
    if value is _MISSING or (nullable and value is None):
        return None
    if not ok(value):
        raise FormatError(f"{place}: '{name}' must be {what}, got {got(value)}")
    return value


def _type_name(value) -> str:
    return type(value).__name__


def field_number(record: dict, name: str, place: str, *, optional: bool = False, nullable: bool = False):
    return _typed(record, name, place, optional, nullable, is_number,
                  "a finite number or null" if nullable else "a finite number")


def field_str(record: dict, name: str, place: str, *, optional: bool = False, nullable: bool = False):
    return _typed(record, name, place, optional, nullable, lambda value: isinstance(value, str),
                  "a string or null" if nullable else "a string", _type_name)


def field_bool(record: dict, name: str, place: str, *, optional: bool = False):
    return _typed(record, name, place, optional, False, lambda value: isinstance(value, bool), "true or false")


def field_map(record: dict, name: str, place: str, *, optional: bool = False, nullable: bool = False):
    return _typed(record, name, place, optional, nullable, lambda value: isinstance(value, dict), "a map",
                  _type_name)


def field_list(record: dict, name: str, place: str, *, optional: bool = False):
    return _typed(record, name, place, optional, False, lambda value: isinstance(value, list), "a list", _type_name)


def field_choice(record: dict, name: str, place: str, choices, *, optional: bool = False):
    """A field whose value must be one the spec lists (any other is refused)."""
    value = _value(record, name, place, optional)
    if value is _MISSING:
        return None
    need(value in tuple(choices), place, f"'{name}' is {value!r}, not one of the values the spec lists "
                                         f"({', '.join(repr(c) for c in choices)})")
    return value


def field_array(record: dict, name: str, place: str, dtypes: tuple[str, ...], shape: tuple | None = None, *,
                optional: bool = False):
    """A numpy array with one of the ``dtypes`` (e.g. ``("|u1", "<u2")``) and, if given, ``shape``."""
    import numpy as np

    value = _value(record, name, place, optional)
    if value is _MISSING:
        return None
    if not isinstance(value, np.ndarray):
        raise FormatError(f"{place}: '{name}' is missing or not an array")
    if value.dtype.str not in dtypes:
        raise FormatError(f"{place}: '{name}' has dtype {value.dtype.str}, expected {' or '.join(dtypes)}")
    if shape is not None and value.shape != tuple(shape):
        raise FormatError(f"{place}: '{name}' has shape {list(value.shape)}, expected {list(shape)}")
    check_finite_array(value, place, name)
    return value


__all__ = ["Schema", "check_finite_array", "field_array", "field_bool", "field_choice", "field_int", "field_list", "field_map",
           "field_number", "field_str", "is_int", "is_non_finite", "is_number", "known_kinds", "need",
           "need_number", "number_problem", "register_schema",
           "schema_for", "where"]
