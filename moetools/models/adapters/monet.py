"""MONET (paper 004): product-key composed experts, N = moe_experts² per layer.

Composed expert (i, j) has id i·moe_experts + j; its gate is g_ij = Σ_h g¹_hi·g²_hj (eq. 7/14),
and a token's selected experts are the top-M pairs by g_ij (M = ``top_k``, default
``moe_topk``). MONET's efficient forward (Algorithms 1-2) never forms one expert's output, so
‖E_ij(x)‖₂ is computed for the M selected pairs from the layer's weights and the captured expert
input (:func:`moetools.models.monet.routing.expert_output_norms`): M small expert evaluations per
token, not a second run of the layer. ``prob_sum`` is Σ_t g_ij(x_t) over all N pairs (rows sum to
H·T, H = routing heads). Slots beyond a token's non-zero pairs have id 2^bits−1 (all ones of the
id dtype) and gate 0.
"""

from __future__ import annotations

from ..registry import Adapter, MoeLayer, RoutingRule


class MonetCapture:
    """The :class:`moetools.models.capture.RoutingCapture` contract for MONET models."""

    def __init__(self, model, adapter, logit_lens: int = 0):
        self.model, self.adapter, self.logit_lens = model, adapter, int(logit_lens)
        self.layers = adapter.moe_layers()
        self._handles, self._seen = [], {}

    def __enter__(self):
        for position, layer in enumerate(self.layers):
            def hook(module, args, position=position):
                x, g1, g2 = args
                self._seen[position] = (x.detach(), g1.detach().float(), g2.detach().float())

            self._handles.append(layer.experts.register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles, self._seen = [], {}

    def take(self, attention_mask=None, keep_probs: bool = False) -> list[dict]:
        import torch

        from ..monet import routing

        results = []
        experts = int(self.model.config.moe_experts)
        for position, layer in enumerate(self.layers):
            x, g1, g2 = self._seen.pop(position)  # (B, T, D), (B, T, H, E) x2
            batch, length = g1.shape[:2]
            ids, gates = routing.top_composed_experts(g1, g2, layer.top_k)  # (B, T, M)
            tokens = torch.arange(batch * length, device=ids.device).repeat_interleave(ids.shape[-1])
            outputs = routing.expert_outputs(self.model, layer.index, x.flatten(0, 1), tokens, ids.flatten())
            norms = outputs.float().norm(dim=-1).view_as(gates)
            empty = gates <= 0
            ids = ids.masked_fill(empty, _padding_id(experts * experts))
            result = {"ids": ids.flatten(0, 1).cpu(), "gates": gates.flatten(0, 1).cpu(),
                      "contribution": (gates * norms).flatten(0, 1).cpu()}
            if attention_mask is not None:
                sums = routing.composed_gate_sums(g1, g2, attention_mask.to(g1.device))  # (B, E, E)
                result["prob_sum"] = sums.reshape(batch, experts * experts).cpu()
            if self.logit_lens:
                norm, unembedding = self.adapter.final_norm(), self.adapter.unembedding()
                logits = unembedding(norm(outputs.to(unembedding.weight.dtype)))  # (B·T·M, V)
                result["lens"] = logits.topk(self.logit_lens, dim=-1).indices.view(batch * length, ids.shape[-1], -1).cpu()
            results.append(result)
        return results


def _padding_id(num_experts: int) -> int:
    import torch

    from ...trace.records import id_dtype

    return int(torch.iinfo(torch.int64).max if num_experts > 1 << 32 else
               {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}[id_dtype(num_experts).itemsize])


class MonetAdapter(Adapter):
    """MONET: product-key composed experts (i, j), N = moe_experts² per layer, top-M by g_ij."""

    name = "monet"
    model_types = ("monet",)
    rule = RoutingRule(scoring="product_key", order="threshold_then_softmax", renormalize=False)

    def is_moe_block(self, mlp) -> bool:
        return True

    def moe_layers(self) -> list[MoeLayer]:
        config = self.config
        top = int(getattr(config, "moe_topk", 1))
        layers = []
        for index, decoder_layer in enumerate(self.decoder_layers()):
            group_leader = self.decoder_layers()[index - index % int(config.moe_groups)]
            layers.append(MoeLayer(index=index, block=decoder_layer, router=getattr(group_leader, "router", None),
                                   experts=decoder_layer.moe, shared=None,
                                   num_experts=int(config.moe_experts) ** 2, top_k=top))
        return layers

    def dense_layers(self) -> list[int]:
        return []

    #: experts composed from factor tables (E_ij from rows i and j): tuned by factor rows, LoRA on the
    #: experts module's Linear children (moetools.tune)
    composed_experts = True

    def write_portable_code(self, directory) -> None:
        from ..monet.shipped import add_to_directory

        add_to_directory(directory)  # configuration_monet.py, modeling_monet.py and auto_map

    def router_layer(self, layer_index: int) -> int:
        # moe_groups consecutive layers share one product-key router (the first of the group holds it)
        size = max(1, int(getattr(self.config, "moe_groups", 1)))
        return layer_index - layer_index % size

    def mask_routing(self) -> dict:
        """moe-mask hooks each layer's experts module (``moe``) and removes the masked pairs' g_ij·E_ij(x)."""
        return {**super().mask_routing(), "block": "moe", "router": None}

    def override_top_k(self, k: int) -> None:
        from ...errors import UsageError

        # MONET's forward mixes every expert its thresholds keep; top-M only chooses what the trace records
        raise UsageError("--top-k: MONET routes by thresholds, not a top-k; there is no k to override")

    def traced_experts_implementation(self) -> str | None:
        return None  # MONET's own experts modules, not transformers' pluggable implementation

    def capture(self, logit_lens: int = 0):
        return MonetCapture(self.model, self, logit_lens=logit_lens)
