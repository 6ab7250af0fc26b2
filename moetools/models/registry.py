"""Model adapters: what the tools need to know about one family of MoE models.

An adapter is an :class:`Adapter` subclass named in the entry-point group
``moetools.adapters``. The built-in families (``moetools/models/adapters/``) are
declared there by moetools' own pyproject.toml exactly as another package
declares its own::

    # my_package/adapters.py
    from moetools.models import Adapter, RoutingRule

    class MyMoeAdapter(Adapter):
        '''My-MoE: softmax over all experts, then top-k.'''
        name = "my-moe"
        model_types = ("my_moe",)
        rule = RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=True)

    # my_package's pyproject.toml
    [project.entry-points."moetools.adapters"]
    my-moe = "my_package.adapters:MyMoeAdapter"

Entry points load lazily, the first time an adapter is looked up, so ``--help``
stays fast and a broken plugin matters only when a model is loaded. A script
can also call :func:`register_adapter` (a class decorator) at run time; later
registrations win over entry points, and another package's entry points over
the built-ins, so a plugin can take over a family.

:func:`adapter_for` returns an instance for a loaded model, or raises
:class:`moetools.errors.ModelError` naming what it found. This module does not
import torch (``moe-trace --list-models`` answers without it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING

from ..errors import ModelError
from ..plugins import group_entries

if TYPE_CHECKING:  # annotations only: importing torch here would slow every --help
    import torch
    from torch import nn

ENTRY_POINT_GROUP = "moetools.adapters"
#: the distribution whose entry points are the built-in adapters

_REGISTERED: list[type[Adapter]] = []  # register_adapter() at run time, most recent first
_ENTRY_POINT_ADAPTERS: list[tuple[type[Adapter], str]] | None = None  # (class, distribution), loaded once


@dataclass(frozen=True)
class RoutingRule:
    """How a router turns logits into the selected experts and their gates.

    ``scoring``: "softmax", "sigmoid" (the per-expert score) or "product_key" (MONET's
    g_ij = Σ_h g¹_hi·g²_hj). ``order``: "softmax_then_topk" (score all experts, keep the
    top-k), "topk_then_softmax" (top-k logits, softmax over those) or
    "threshold_then_softmax" (MONET). ``renormalize``: selected scores divided
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
    """Base class: the defaults fit the transformers 5 decoder-only MoE layout.

    The first line of a subclass's docstring is what ``moe-trace --list-models`` shows. A family
    is described here and nowhere else: trace, mask, tune, eval and probe derive what they need
    from the routing rule and the attributes below (moe-mask writes :meth:`mask_routing` into
    the masked directory, formats/mask.md).
    """

    name: str = "base"
    model_types: tuple[str, ...] = ()
    rule: RoutingRule = RoutingRule()
    #: dotted path from the model to its list of decoder layers
    layers_attribute = "model.layers"
    #: attribute of a decoder layer holding its MLP (MoE block or dense MLP)
    mlp_attribute = "mlp"
    #: attribute of the MoE block holding the router (a module returning (logits, gates, ids), with ``top_k``)
    router_attribute = "gate"
    shared_attributes: tuple[str, ...] = ("shared_experts", "shared_expert")
    #: config key of the routed-expert count as the router reads it (resolved through the config's attribute_map)
    expert_count_key = "num_experts"
    #: dotted path from the router to the choice bias added to the scores (when ``rule.score_bias``)
    score_bias_attribute = "e_score_correction_bias"
    #: a group-limited router's score of a group: "max" (its best expert) or "top2_sum" (its best two)
    group_score = "max"
    #: the router's top-k returns its experts sorted by score (torch.topk ``sorted``)
    topk_sorted = True
    #: dtype of the gates a softmax/sigmoid top-k router returns: "logits" (its logits' dtype) or "float32"
    gate_dtype = "logits"

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return getattr(model.config, "model_type", None) in cls.model_types

    @classmethod
    def summary(cls) -> str:
        """One line about the family (the docstring's first line)."""
        doc = cls.__doc__ if "__doc__" in cls.__dict__ else None
        return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""

    # -- structure -------------------------------------------------------------------------
    def decoder_layers(self) -> list[nn.Module]:
        from operator import attrgetter

        return list(attrgetter(self.layers_attribute)(self.model))

    def is_moe_block(self, mlp: nn.Module) -> bool:
        return hasattr(mlp, "experts") and hasattr(mlp, self.router_attribute)

    def routing_rule(self, layer: MoeLayer | None = None) -> RoutingRule:
        return self.rule

    def expert_groups(self) -> tuple[int, int]:
        """(groups, groups chosen per token) of a group-limited router; (1, 1) when the rule is not."""
        return 1, 1

    #: experts built from shared factor tables rather than one weight row each (MONET); see MonetAdapter
    composed_experts: bool = False

    def write_portable_code(self, directory) -> None:
        """Write into a saved checkpoint ``directory`` whatever lets it load where moetools is not
        installed (a family transformers does not know ships its code and ``auto_map``); nothing for the
        families transformers has."""

    def router_layer(self, layer_index: int) -> int:
        """The layer whose router routes decoder layer ``layer_index`` (itself, unless the family shares
        one router over several layers, as MONET's ``moe_groups``)."""
        return layer_index

    def expert_count_keys(self) -> tuple[str, ...]:
        """The config keys holding the routed-expert count: the stored name first, then its aliases."""
        aliases = dict(getattr(type(self.config), "attribute_map", {}) or {})
        stored = aliases.get(self.expert_count_key, self.expert_count_key)
        return (stored, *sorted(alias for alias, target in aliases.items() if target == stored))

    def mask_routing(self) -> dict:
        """The routing rule as moe-mask's routing code recomputes it with masked experts: plain JSON,
        written into a masked directory's ``moe_mask`` record (formats/mask.md, ``routing``)."""
        rule = self.routing_rule()
        groups, top_groups = self.expert_groups()
        return {"layers": self.layers_attribute, "block": self.mlp_attribute, "router": self.router_attribute,
                "scoring": rule.scoring, "order": rule.order, "renormalize": rule.renormalize,
                "score_bias": self.score_bias_attribute if rule.score_bias else None,
                "groups": groups, "top_groups": top_groups, "group_score": self.group_score,
                "scaling": rule.scaling, "topk_sorted": self.topk_sorted, "gate_dtype": self.gate_dtype}

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

    def max_top_k(self) -> int:
        """The largest k the routers can select (``--top-k``): every routed expert, by default."""
        return self.moe_layers()[0].num_experts

    def override_top_k(self, k: int) -> None:
        """Make every router select ``k`` experts per token (``moe-trace --top-k``); changes the forward.

        The families' routers read ``self.top_k`` at each call, so the override is that attribute:
        scoring, score bias, group limit and renormalisation then follow the family's own rule with
        ``k`` (OLMoE/Qwen with ``norm_topk_prob`` and Mixtral divide the k selected probabilities by
        their sum; GPT-OSS softmaxes over the top-k logits), exactly as a config with
        ``num_experts_per_tok = k`` computes. The config itself is left alone, so the model's
        identity (fingerprint) stays that of the checkpoint. UsageError for k outside [1, max_top_k()].
        """
        from ..errors import UsageError

        limit = self.max_top_k()
        if not 1 <= int(k) <= limit:
            raise UsageError(f"--top-k {k}: this model's routers can select 1 to {limit} experts per token")
        for layer in self.moe_layers():
            for module in (layer.router, layer.block):  # ERNIE's block keeps a copy it does not use; keep it true
                if hasattr(module, "top_k"):
                    module.top_k = int(k)

    def dense_layers(self) -> list[int]:
        moe = {layer.index for layer in self.moe_layers()}
        return [i for i in range(len(self.decoder_layers())) if i not in moe]

    def final_norm(self) -> nn.Module:
        return self.model.model.norm

    def unembedding(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def vocab_size(self) -> int:
        """Rows of the unembedding: the largest ``--logit-lens`` top-J there is."""
        return int(self.unembedding().weight.shape[0])

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
        import torch

        logits = logits.float().reshape(-1, logits.shape[-1])
        if self.routing_rule(layer).scoring == "sigmoid":
            scores = logits.sigmoid()
            return scores / scores.sum(dim=-1, keepdim=True)
        return torch.softmax(logits, dim=-1)

    def capture(self, logit_lens: int = 0):
        """A context manager recording routing during forward passes (``take()`` per batch).

        Default: :class:`moetools.models.capture.RoutingCapture` (transformers' pluggable
        experts implementation); an adapter for another architecture returns its own object
        with the same ``__enter__``/``__exit__``/``take(attention_mask, keep_probs)`` contract.
        """
        from .capture import RoutingCapture

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


# -- the registry ---------------------------------------------------------------------------

def _check_adapter_class(cls, where: str) -> type[Adapter]:
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ModelError(f"{where} is not an Adapter subclass (moetools.models.Adapter)")
    return cls


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make ``cls`` available to :func:`adapter_for` now (wins over entry points)."""
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError("register_adapter expects an Adapter subclass")
    if cls in _REGISTERED:
        _REGISTERED.remove(cls)
    _REGISTERED.insert(0, cls)
    return cls


def unregister_adapter(cls: type[Adapter]) -> None:
    """Undo :func:`register_adapter` (entry-point adapters stay)."""
    if cls in _REGISTERED:
        _REGISTERED.remove(cls)


def adapter_entry_points() -> list[tuple[EntryPoint, str]]:
    """(entry point, package) of the group: other packages' first (sorted), then the built-ins."""
    return group_entries(ENTRY_POINT_GROUP)


def _entry_point_adapters() -> list[tuple[type[Adapter], str]]:
    global _ENTRY_POINT_ADAPTERS
    if _ENTRY_POINT_ADAPTERS is None:
        loaded = []
        for entry, distribution in adapter_entry_points():
            where = f"adapter entry point {entry.name} = {entry.value!r} (package {distribution})"
            try:
                cls = entry.load()
            except (ImportError, AttributeError) as error:
                raise ModelError(f"cannot load {where}: {error}") from None
            loaded.append((_check_adapter_class(cls, where), distribution))
        _ENTRY_POINT_ADAPTERS = loaded
    return list(_ENTRY_POINT_ADAPTERS)


def registered_adapters() -> list[type[Adapter]]:
    """Every adapter class, in the order :func:`adapter_for` tries them (first match wins)."""
    return [*_REGISTERED, *(cls for cls, _ in _entry_point_adapters())]


def adapter_table() -> list[dict]:
    """One row per adapter for ``--list-models``: name, model types, package, summary."""
    rows = [{"name": cls.name, "model_types": list(cls.model_types), "package": cls.__module__.split(".")[0],
             "summary": cls.summary()} for cls in _REGISTERED]
    rows += [{"name": cls.name, "model_types": list(cls.model_types), "package": distribution,
              "summary": cls.summary()} for cls, distribution in _entry_point_adapters()]
    return rows


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model``, or a :class:`ModelError` naming what was found."""
    candidates = registered_adapters()
    for cls in candidates:
        if cls.matches(model):
            adapter = cls(model)
            if not adapter.moe_layers():
                break
            return adapter
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    known = sorted({t for cls in candidates for t in cls.model_types})
    raise ModelError(f"not a supported MoE model: found {type(model).__name__} (model_type "
                     f"{model_type!r}) with no MoE layers a moetools adapter knows; supported model types: "
                     f"{', '.join(known)} (moe-trace --list-models)")
