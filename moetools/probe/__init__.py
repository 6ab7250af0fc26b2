"""moe-probe: neuron-level evidence for paper 002 (k-sparse probing of expert and dense FFN neurons).

``moetools.probe.neurons`` holds the pass over a corpus and the probes; ``hidden`` the
capture of h inside the experts computation; ``concepts`` the offline token concepts;
``stats`` the bounded-memory statistics; ``regression`` the probe itself.
"""


#: the tool's entry point (CONTRIBUTING.md, "Add a tool"), imported when first used
_ENTRY = {"probe_causal": "run"}


def __getattr__(name):
    if name in _ENTRY:
        import importlib

        return getattr(importlib.import_module(f".{_ENTRY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["probe_causal"]
