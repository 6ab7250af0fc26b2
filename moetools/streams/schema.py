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
"""

from __future__ import annotations

import importlib
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
        """Raise :class:`FormatError` unless ``record`` is valid in a stream with this ``header``."""
        kind = record.get("type")
        if self.record_types and kind not in self.record_types:
            where = "record" if number is None else f"record {number}"
            raise FormatError(f"{where}: type {kind!r} is not a {self.kind} record type "
                              f"({', '.join(self.record_types)})")

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
    return (isinstance(value, (int, float)) and not isinstance(value, bool))


__all__ = ["Schema", "is_int", "is_number", "known_kinds", "need", "register_schema", "schema_for", "where"]
