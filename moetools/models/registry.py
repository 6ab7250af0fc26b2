"""Model adapters: what the tools need to know about one family of MoE models.

An adapter is a class registered with :func:`register_adapter`; the built-in
families (``moetools/models/adapters/``) use the same decorator a user's own
adapter would::

    from moetools.models import Adapter, register_adapter

    @register_adapter
    class MyMoeAdapter(Adapter):
        name = "my-moe"
        model_types = ("my_moe",)
        rule = RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=True)

:func:`adapter_for` returns an instance for a loaded model, or raises
:class:`moetools.errors.ModelError` naming what it found.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ModelError

_ADAPTERS: list[type[Adapter]] = []


@dataclass(frozen=True)
class RoutingRule:
    """How a router turns logits into the selected experts and their gates.

    ``scoring``: "softmax" or "sigmoid" (the per-expert score). ``order``:
    "softmax_then_topk" (score all experts, keep the top-k) or "topk_then_softmax"
    (top-k logits, softmax over those). ``renormalize``: selected scores divided
    by their sum. ``score_bias``: a correction bias added to the scores for the
    choice only (DeepSeek-V3 ``e_score_correction_bias``, ERNIE ``moe_statics``).
    ``group_limited``: experts chosen only from the best groups. ``router_bias``:
    the router's linear layer has a bias. ``scaling``: factor on the gates.
    """

    scoring: str = "softmax"
    order: str = "softmax_then_topk"
    renormalize: bool = False
    score_bias: bool = False
    group_limited: bool = False
    router_bias: bool = False
    scaling: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MoeLayer:
    """One MoE layer: where its parts are in the model."""

    index: int  # decoder layer index in the model
    block: nn.Module  # the sparse MoE block (router + experts + shared experts)
    router: nn.Module  # returns (router_logits (N, E), gates (N, K), ids (N, K))
    experts: nn.Module  # fused experts: gate_up_proj [E, 2I, d], down_proj [E, d, I] (or transposed)
    shared: nn.Module | None  # shared expert(s) every token goes through, if any
    num_experts: int
    top_k: int


class Adapter:
    """Base class: the defaults fit the transformers 5 decoder-only MoE layout."""

    name: str = "base"
    model_types: tuple[str, ...] = ()
    rule: RoutingRule = RoutingRule()
    #: attribute of a decoder layer holding its MLP (MoE block or dense MLP)
    mlp_attribute = "mlp"
    router_attribute = "gate"
    shared_attributes: tuple[str, ...] = ("shared_experts", "shared_expert")

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return getattr(model.config, "model_type", None) in cls.model_types

    # -- structure -------------------------------------------------------------------------
    def decoder_layers(self) -> list[nn.Module]:
        return list(self.model.model.layers)

    def is_moe_block(self, mlp: nn.Module) -> bool:
        return hasattr(mlp, "experts") and hasattr(mlp, self.router_attribute)

    def routing_rule(self, layer: MoeLayer | None = None) -> RoutingRule:
        return self.rule

    def moe_layers(self) -> list[MoeLayer]:
        layers = []
        for index, decoder_layer in enumerate(self.decoder_layers()):
            block = getattr(decoder_layer, self.mlp_attribute, None)
            if block is None or not self.is_moe_block(block):
                continue
            router = getattr(block, self.router_attribute)
            shared = next((getattr(block, a) for a in self.shared_attributes if getattr(block, a, None) is not None),
                          None)
            layers.append(MoeLayer(index=index, block=block, router=router, experts=block.experts, shared=shared,
                                   num_experts=int(block.experts.num_experts), top_k=int(router.top_k)))
        return layers

    def dense_layers(self) -> list[int]:
        moe = {layer.index for layer in self.moe_layers()}
        return [i for i in range(len(self.decoder_layers())) if i not in moe]

    def final_norm(self) -> nn.Module:
        return self.model.model.norm

    def unembedding(self) -> nn.Module:
        return self.model.get_output_embeddings()

    # -- routing ---------------------------------------------------------------------------
    def router_logits(self, router_output) -> torch.Tensor:
        """The (N, E) logits from the router module's output."""
        return router_output[0]

    def router_probabilities(self, layer: MoeLayer, logits: torch.Tensor) -> torch.Tensor:
        """The full routing distribution (N, E), fp32, every expert's probability.

        softmax routers: softmax over all E logits (for top-k-then-softmax routers
        too: the distribution the selected gates are a renormalised slice of);
        sigmoid routers: the sigmoid scores divided by their sum over experts, so
        each row sums to 1 (paper 003 eq. 1 needs a per-expert routing score g_t).
        """
        logits = logits.float().reshape(-1, logits.shape[-1])
        if self.routing_rule(layer).scoring == "sigmoid":
            scores = logits.sigmoid()
            return scores / scores.sum(dim=-1, keepdim=True)
        return torch.softmax(logits, dim=-1)

    def capture(self, logit_lens: int = 0):
        """A context manager recording routing during forward passes (``take()`` per batch).

        Default: :class:`moetools.trace.capture.RoutingCapture` (transformers' pluggable
        experts implementation); an adapter for another architecture returns its own object
        with the same ``__enter__``/``__exit__``/``take(attention_mask, keep_probs)`` contract.
        """
        from ..trace.capture import RoutingCapture

        return RoutingCapture(self.model, self, logit_lens=logit_lens)

    def traced_experts_implementation(self) -> str | None:
        """The transformers experts implementation a trace runs (RoutingCapture's rule), for the header."""
        current = getattr(self.config, "_experts_implementation", None)
        return current if current in ("grouped_mm", "batched_mm") else "grouped_mm"

    def describe(self) -> dict:
        layers = self.moe_layers()
        return {"adapter": self.name, "moe_layers": [layer.index for layer in layers],
                "dense_layers": self.dense_layers(), "rule": self.routing_rule().as_dict(),
                "shared_experts": any(layer.shared is not None for layer in layers)}


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make ``cls`` available to :func:`adapter_for` (later registrations win)."""
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError("register_adapter expects an Adapter subclass")
    if cls in _ADAPTERS:
        _ADAPTERS.remove(cls)
    _ADAPTERS.insert(0, cls)
    return cls


def registered_adapters() -> list[type[Adapter]]:
    from . import adapters  # noqa: F401 - registers the built-ins

    return list(_ADAPTERS)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model``, or a :class:`ModelError` naming what was found."""
    for cls in registered_adapters():
        if cls.matches(model):
            adapter = cls(model)
            if not adapter.moe_layers():
                break
            return adapter
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    known = sorted({t for cls in _ADAPTERS for t in cls.model_types})
    raise ModelError(f"not a supported MoE model: found {type(model).__name__} (model_type "
                     f"{model_type!r}) with no MoE layers a moetools adapter knows; supported model types: "
                     f"{', '.join(known)}")
