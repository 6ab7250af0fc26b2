"""Capture routing, gates, contributions and full router distributions during a forward pass.

    with RoutingCapture(model, adapter) as capture:
        model(input_ids, attention_mask=mask)
        layers = capture.take()   # one dict per MoE layer, tensors on CPU

Per MoE layer ``l`` and flattened token ``n`` (N = B·T tokens of the batch):

- ``ids`` (N, K) int64 and ``gates`` (N, K): the routing the block handed to its
  experts (recorded inside the experts computation, so exactly what the model mixed);
- ``contribution`` (N, K) fp32: g_i(x)·‖E_i(x)‖₂ (paper 002, residual-stream
  contribution; E_i(x) is the expert output before the gate weight);
- ``probs`` (N, E) fp32: the full router distribution (adapter's
  :meth:`~moetools.models.Adapter.router_probabilities`), from the router's own logits;
- ``lens`` (N, K, J) int64 with ``logit_lens=J``: top-J token ids of
  W_U · final_norm(E_i(x)) (the logit lens applied to one expert's output).

The experts run once: the norms come from a registered experts implementation
(:mod:`moetools.models.traced_experts`), the logits from a forward hook on the router.
The model's outputs are bit-identical to an untraced run under the same
experts implementation (``grouped_mm``, transformers' default, or ``batched_mm``;
a model set to ``eager`` is traced with ``grouped_mm``).
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from .traced_experts import TRACE_IMPLEMENTATIONS, register_trace_implementations

LOGIT_LENS_CHUNK = 4096  # rows of expert outputs projected to the vocabulary at once (bounds memory)


class RoutingCapture:
    def __init__(self, model, adapter, logit_lens: int = 0):
        self.model = model
        self.adapter = adapter
        self.layers = adapter.moe_layers()
        self.logit_lens = int(logit_lens)
        self._handles = []
        self._sinks: list[list] = []
        self._logits: list[list] = []
        self._saved_implementations: list[tuple] = []

    # -- setup -----------------------------------------------------------------------------
    def _configs(self):
        seen = {}
        for layer in self.layers:
            config = getattr(layer.experts, "config", None)
            if config is None or not hasattr(config, "_experts_implementation"):
                raise ModelError(f"{type(layer.experts).__name__} does not use transformers' pluggable experts "
                                 "implementation; moe-trace cannot capture its expert outputs")
            seen[id(config)] = config
        return list(seen.values())

    def _lens_function(self):
        norm = self.adapter.final_norm()
        unembedding = self.adapter.unembedding()
        top = self.logit_lens

        def lens(expert_out):  # (S, d) -> (S, J)
            rows = []
            for start in range(0, expert_out.shape[0], LOGIT_LENS_CHUNK):
                chunk = expert_out[start:start + LOGIT_LENS_CHUNK]
                logits = unembedding(norm(chunk.to(unembedding.weight.dtype)))  # (chunk, V)
                rows.append(logits.topk(top, dim=-1).indices)
            if not rows:
                return torch.empty(0, top, dtype=torch.long, device=expert_out.device)
            return torch.cat(rows)

        return lens

    def __enter__(self) -> RoutingCapture:  # noqa: PYI034 - Python 3.10 has no typing.Self
        register_trace_implementations()
        for config in self._configs():
            current = config._experts_implementation
            base = current if current in TRACE_IMPLEMENTATIONS else "grouped_mm"
            self._saved_implementations.append((config, config._experts_implementation_internal))
            # Bypass set_experts_implementation's validation: our names are registered, and
            # the setter on the property would also rewrite sub-configs we do not touch.
            config._experts_implementation_internal = TRACE_IMPLEMENTATIONS[base]
        lens = self._lens_function() if self.logit_lens > 0 else None
        for layer in self.layers:
            sink: list = []
            layer.experts._moetools_sink = sink
            layer.experts._moetools_lens = lens
            self._sinks.append(sink)
            logits: list = []
            self._logits.append(logits)
            self._handles.append(layer.router.register_forward_hook(self._router_hook(logits)))
        return self

    def _router_hook(self, store: list):
        def hook(module, args, output):
            store.append(self.adapter.router_logits(output).detach())

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for layer in self.layers:
            for name in ("_moetools_sink", "_moetools_lens"):
                if hasattr(layer.experts, name):
                    delattr(layer.experts, name)
        for config, saved in self._saved_implementations:
            config._experts_implementation_internal = saved
        self._handles, self._sinks, self._logits, self._saved_implementations = [], [], [], []

    # -- results ---------------------------------------------------------------------------
    def take(self, attention_mask: torch.Tensor | None = None, keep_probs: bool = False) -> list[dict]:
        """What the forward pass since the last call recorded, per MoE layer, on CPU; clears it.

        With ``attention_mask`` (B, T) each layer also gets ``prob_sum`` (B, E): the
        full distribution summed over each sequence's real tokens, reduced on the
        model's device (so no (N, E) tensor per layer is copied out). ``probs``
        (N, E) is returned without a mask, or with ``keep_probs``.
        """
        results = []
        for layer, sink, logits in zip(self.layers, self._sinks, self._logits):
            if len(sink) != 1 or len(logits) != 1:
                raise ModelError(f"layer {layer.index}: expected one router call and one experts call per forward, "
                                 f"saw {len(logits)} and {len(sink)}")
            entry = sink.pop()
            router_logits = logits.pop()
            probs = self.adapter.router_probabilities(layer, router_logits)  # (N, E) fp32
            gates = entry["gates"]
            result = {
                "ids": entry["ids"].to("cpu"),
                "gates": gates.to("cpu"),
                "contribution": (gates.float() * entry["norms"]).to("cpu"),
            }
            if attention_mask is not None:
                mask = attention_mask.to(probs.device, torch.float32)  # (B, T)
                per_sequence = probs.view(*mask.shape, probs.shape[-1]) * mask[..., None]  # (B, T, E)
                result["prob_sum"] = per_sequence.sum(dim=1).to("cpu")  # (B, E)
            if attention_mask is None or keep_probs:
                result["probs"] = probs.to("cpu")
            if "lens" in entry:
                result["lens"] = entry["lens"].to("cpu")
            results.append(result)
        return results
