"""moe-probe: neuron-level evidence for paper 002 (k-sparse probing of expert and dense FFN neurons).

``moetools.probe.neurons`` holds the pass over a corpus and the probes; ``hidden`` the
capture of h inside the experts computation; ``concepts`` the offline token concepts;
``stats`` the bounded-memory statistics; ``regression`` the probe itself.
"""

from ..lazy import lazy_exports

#: the tool's entry point (CONTRIBUTING.md, "Add a tool"), imported when first used
__getattr__ = lazy_exports(__name__, {"probe_causal": "run"})

__all__ = ["probe_causal"]
