"""One module per stream kind, each registering its :class:`moetools.streams.schema.Schema`.

Imported by :func:`moetools.streams.schema.schema_for`; a new kind adds a module here
(and its spec in formats/<kind>.md, with valid and invalid example files).
"""
