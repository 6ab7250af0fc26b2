"""Capture the FFN hidden vector h during the model's own forward pass (paper 002, k-sparse probing).

Paper 002 (formats/REFERENCES.md; ``../shared/papers/002_*.txt``, "Neuron-level Probing")
probes the intermediate activation of each expert, h = act(W_gate x) ⊙ (W_up x), on the
tokens routed to that expert, and the dense FFN's hidden vector at the same position.

- MoE (any experts module on transformers 5's pluggable experts interface): we register
  ``moetools_probe_grouped_mm``, op for op transformers' ``grouped_mm`` forward (same
  kernels, same order, so the layer output is unchanged) that also records, per
  (token, slot), the expert id and the row of h it computed. No expert runs twice.
- Dense (Llama-style ``mlp.down_proj``): a forward pre-hook on ``down_proj`` records its
  input, which is h = act(gate_proj x) ⊙ up_proj x.

    with HiddenCapture(model, adapter) as capture:   # adapter None: the dense path
        model(input_ids, attention_mask=mask)
        for layer, unit_ids, h in capture.take():    # unit_ids (N, K) int64, h (N, K, I) fp32
            ...

For the dense path K = 1 and every unit id is 0 (the layer is one "unit").
"""

from __future__ import annotations

import torch
from transformers.integrations import moe as hf_moe

from ..errors import ModelError
from ..models.traced_experts import grouped_mm_forward

PROBE_IMPLEMENTATION = "moetools_probe_grouped_mm"


def probe_grouped_mm_forward(self, hidden_states, top_k_index, top_k_weights):
    """transformers' ``grouped_mm`` experts forward (:func:`moetools.models.traced_experts.grouped_mm_forward`,
    op for op) that also records h per (token, slot)."""
    if self._is_expert_parallel:
        raise ModelError("moe-probe does not support expert parallelism; load the model with device_map instead")
    num_tokens, num_top_k = top_k_index.shape

    def keep(hidden, expert_out, inv_perm):
        sink = getattr(self, "_moetools_hidden_sink", None)
        if sink is not None:
            with torch.no_grad():  # back to token-major, slot-minor order: (N, K, I)
                sink.append((top_k_index.detach(),
                             hidden.detach()[inv_perm].float().view(num_tokens, num_top_k, -1)))

    return grouped_mm_forward(self, hidden_states, top_k_index, top_k_weights, keep)


def dense_mlps(model) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, ``down_proj``) of each decoder layer of a Llama-style dense model."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    found = []
    for index, layer in enumerate(layers or []):
        down = getattr(getattr(layer, "mlp", None), "down_proj", None)
        if isinstance(down, torch.nn.Linear):
            found.append((index, down))
    if not found:
        raise ModelError(f"{type(model).__name__} has neither MoE layers nor Llama-style mlp.down_proj layers "
                         "to probe")
    return found


class HiddenCapture:
    """Records h for every MoE layer of ``adapter`` (or every dense MLP when ``adapter`` is None)."""

    def __init__(self, model, adapter):
        self.model = model
        self.adapter = adapter
        self._sinks: list[tuple[int, list]] = []
        self._handles = []
        self._saved: list[tuple] = []
        self._modules = []

    def __enter__(self) -> HiddenCapture:  # noqa: PYI034
        if self.adapter is None:
            for index, down in dense_mlps(self.model):
                sink: list = []
                self._sinks.append((index, sink))
                self._handles.append(down.register_forward_pre_hook(self._dense_hook(sink)))
            return self
        hf_moe.ExpertsInterface.register(PROBE_IMPLEMENTATION, probe_grouped_mm_forward)
        configs = {}
        for layer in self.adapter.moe_layers():
            config = getattr(layer.experts, "config", None)
            if config is None or not hasattr(config, "_experts_implementation"):
                raise ModelError(f"{type(layer.experts).__name__} does not use transformers' pluggable experts "
                                 "implementation; moe-probe cannot capture its hidden vectors")
            configs[id(config)] = config
            sink = []
            layer.experts._moetools_hidden_sink = sink
            self._modules.append(layer.experts)
            self._sinks.append((layer.index, sink))
        for config in configs.values():
            self._saved.append((config, config._experts_implementation_internal))
            config._experts_implementation_internal = PROBE_IMPLEMENTATION  # as RoutingCapture does
        return self

    @staticmethod
    def _dense_hook(sink: list):
        def hook(module, args):
            hidden = args[0].detach()  # (B, T, I) or (N, I)
            flat = hidden.reshape(-1, hidden.shape[-1]).float()  # (N, I)
            ids = torch.zeros(flat.shape[0], 1, dtype=torch.long, device=flat.device)
            sink.append((ids, flat[:, None, :]))

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._modules:
            if hasattr(module, "_moetools_hidden_sink"):
                del module._moetools_hidden_sink
        for config, saved in self._saved:
            config._experts_implementation_internal = saved
        self._handles, self._modules, self._saved, self._sinks = [], [], [], []

    def take(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(layer index, unit ids (N, K) int64, h (N, K, I) fp32) per layer for the last forward, on CPU."""
        results = []
        for index, sink in self._sinks:
            if len(sink) != 1:
                raise ModelError(f"layer {index}: expected one experts/MLP call per forward, saw {len(sink)}")
            ids, hidden = sink.pop()
            results.append((index, ids.to("cpu"), hidden.to("cpu")))
        return results
