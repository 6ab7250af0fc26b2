"""Built-in adapters, one module per family group.

They are registered through the ``moetools.adapters`` entry points in moetools'
pyproject.toml, exactly as another package's adapters are (see
:mod:`moetools.models.registry`); importing this package registers nothing.
"""
