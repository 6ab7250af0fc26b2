"""moe-probe: neuron-level evidence for paper 002 (k-sparse probing of expert and dense FFN neurons).

``moetools.probe.neurons`` holds the pass over a corpus and the probes; ``hidden`` the
capture of h inside the experts computation; ``concepts`` the offline token concepts;
``stats`` the bounded-memory statistics; ``regression`` the probe itself.
"""
