"""Training only some experts' slices of fused expert tensors, bit-exactly and cheaply.

Transformers 5 stores a layer's experts fused (``gate_up_proj [E, 2I, d]``, ``down_proj [E, d, I]``;
GPT-OSS ``[E, d, 2I]`` plus biases ``[E, 2I]``, ``[E, d]``), and MONET's experts are blocks of rows
or columns of ordinary Linear layers (``u.weight [E·M, d]``, ``v.weight [d, E·M]``, ``b [E, d]``).
Freezing a module is not enough, and a full-size trainable tensor would give the optimizer
full-size state. So, per fused tensor ("base", frozen, ``requires_grad=False``):

- ``experts``: every selected expert's slice is its own ``nn.Parameter`` that *aliases* the base
  tensor's storage (``experts_view(base)[e]``: no copy); before the owning module's forward,
  :class:`Alias` hands the module a view of the base attached to autograd, whose backward returns
  each selected expert's rows of the incoming gradient to its parameter. The optimizer updates
  those rows in place, in the base's own storage;
- ``lora-experts`` (LoRA of paper 003 §3 restricted to the chosen experts): the slices are computed,
  ``values [k, *slice]`` = frozen copy + (alpha/r)·B_e A_e per expert, and :class:`Splice` writes
  them into the selected rows of the base *in place* before the forward, with the same backward.

Unselected rows are never written, so they stay bit-for-bit what was loaded, and the optimizer only
ever sees the selected experts' parameters: its state grows with them, not with the model.

No gradient of full size either, and no stored activations of the experts (``experts`` mode on
transformers' experts modules, :mod:`.per_expert`): the module runs its family's own per-expert
forward, where expert e's tensor is its own parameter when selected and a frozen row otherwise, and
recomputes it in the backward pass instead of keeping its activations.

A slice is described by ``(dim, block, num)``: the tensor's dimension ``dim`` holds ``num`` experts
of ``block`` consecutive entries each (HF fused tensors: dim 0, block 1; MONET ``v.weight``: dim 1,
block M). :func:`experts_view` turns a tensor into ``[num, ...]`` (a view) so expert e is ``view[e]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UsageError
from .per_expert import eager_forward, per_expert_forward


def experts_view(tensor: torch.Tensor, dim: int, block: int, num: int) -> torch.Tensor:
    """``tensor`` as ``[num, ...]`` with expert e at index e (a view, writes go through)."""
    if block == 1 and tensor.shape[dim] == num:
        return tensor.movedim(dim, 0)
    return tensor.unflatten(dim, (num, block)).movedim(dim, 0)


class Splice(torch.autograd.Function):
    """``values [k, ...]`` written into rows ``ids`` of ``base`` in place; the output is ``base``
    (a view) with a gradient path to ``values`` only (the selected rows of the incoming gradient)."""

    @staticmethod
    def forward(ctx, values, base, ids, dim, block, num):
        with torch.no_grad():
            experts_view(base, dim, block, num)[ids] = values.to(base.dtype)
        ctx.save_for_backward(ids)
        ctx.layout, ctx.values_dtype = (dim, block, num), values.dtype
        return base.view_as(base)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        selected = experts_view(grad, *ctx.layout)[ids].to(ctx.values_dtype)  # [k, ...]
        return selected, None, None, None, None, None


class Alias(torch.autograd.Function):
    """``base`` (a view) with a gradient path to ``experts`` (one parameter per selected expert, each
    aliasing its rows of ``base``): the backward hands each its rows of the incoming gradient."""

    @staticmethod
    def forward(ctx, base, layout, ids, *experts):
        ctx.layout, ctx.ids = layout, ids
        return base.view_as(base)

    @staticmethod
    def backward(ctx, grad):
        rows = experts_view(grad, *ctx.layout)
        return (None, None, None, *(rows[e].clone() for e in ctx.ids))


@dataclass
class ExpertSlice:
    """The selected experts of one fused parameter."""

    name: str               # the parameter's name in the model (state-dict key)
    owner: nn.Module        # the module whose forward reads it
    attribute: str          # its attribute name on ``owner``
    dim: int
    block: int
    num: int                # experts (or MONET factor experts) along ``dim``
    ids: list[int]          # selected, ascending
    layer: int = -1
    extra: dict = field(default_factory=dict)

    @property
    def base(self) -> torch.Tensor:
        return self.owner._parameters[self.attribute]

    def gather(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """The selected slices ``[k, ...]`` (a copy) of ``tensor`` (default: the base)."""
        tensor = self.base if tensor is None else tensor
        index = torch.tensor(self.ids, device=tensor.device)
        return experts_view(tensor.detach(), self.dim, self.block, self.num)[index].clone()

    def describe(self) -> dict:
        return {"dim": self.dim, "block": self.block, "num": self.num, "ids": list(self.ids), "layer": self.layer}


# -- which tensors hold which experts --------------------------------------------------------------

MONET_FACTOR = {  # attribute path in a MONET layer's ``moe`` -> (dim, factor: 0 bottom i / 1 top j, block key)
    "horizontal": {"u.weight": (0, 0), "u.bias": (0, 0), "v.weight": (1, 1), "b": (0, 1)},
    "vertical": {"u1.weight": (0, 0), "u1.bias": (0, 0), "v11.weight": (1, 0), "v12.weight": (1, 0), "b1": (0, 0),
                 "u2.weight": (0, 1), "u2.bias": (0, 1), "v21.weight": (1, 1), "v22.weight": (1, 1), "b2": (0, 1)},
}


def _resolve(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    *parents, attribute = path.split(".")
    for parent in parents:
        module = getattr(module, parent)
    return module, attribute


def expert_slices(model, adapter, chosen: dict[int, list[int]]) -> list[ExpertSlice]:
    """One :class:`ExpertSlice` per fused tensor of every layer in ``chosen`` (layer -> expert ids).

    HF families: every parameter of the layer's experts module whose first dimension is the
    expert count. MONET: composed expert (i, j) = i·E + j trains bottom factor i's and top factor
    j's blocks (``MONET_FACTOR``); composed experts share factors, so tuning (i, j) also changes
    (i, j') and (i', j) — the architecture's parameter sharing, not a leak.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    layers = {layer.index: layer for layer in adapter.moe_layers()}
    slices = []
    for layer_index, ids in sorted(chosen.items()):
        if not ids:
            continue
        if layer_index not in layers:
            raise UsageError(f"layer {layer_index} is not an MoE layer of this model "
                             f"(MoE layers: {sorted(layers)})")
        layer = layers[layer_index]
        bad = [i for i in ids if not 0 <= int(i) < layer.num_experts]
        if bad:
            raise UsageError(f"layer {layer_index}: expert ids {bad} out of range 0..{layer.num_experts - 1}")
        experts = layer.experts
        if adapter.composed_experts:
            factor = int(model.config.moe_experts)
            per_factor = (sorted({int(i) // factor for i in ids}), sorted({int(i) % factor for i in ids}))
            table = MONET_FACTOR[model.config.moe_decompose]
            block = experts.moe_dim if model.config.moe_decompose == "horizontal" else experts.half_dim
            for path, (dim, which) in table.items():
                owner, attribute = _resolve(experts, path)
                parameter = owner._parameters[attribute]
                rows = 1 if path in ("b", "b1", "b2") else block
                slices.append(ExpertSlice(names[id(parameter)], owner, attribute, dim, rows, factor,
                                          per_factor[which], layer_index, {"factor": "ij"[which]}))
            continue
        for attribute, parameter in experts.named_parameters(recurse=False):
            if parameter.ndim >= 1 and parameter.shape[0] == layer.num_experts:
                slices.append(ExpertSlice(names[id(parameter)], experts, attribute, 0, 1, layer.num_experts,
                                          sorted(int(i) for i in ids), layer_index))
    return slices


# -- the trainable side ------------------------------------------------------------------------------

def _key(name: str) -> str:
    return name.replace(".", "__")


class SliceTrainer(nn.Module):
    """Trainable parameters of the selected slices and the hooks that connect them to the model.

    ``lora_rank=None``: the slices themselves train (``experts``), one parameter per expert and
    fused tensor, aliasing the tensor's storage. ``lora_rank=r``: LoRA per selected
    expert on slices that are matrices (``lora-experts``; 1-D slices such as biases stay frozen), the
    slice being frozen + (alpha/r)·B A with A ``[k, r, cols]`` (Kaiming-uniform, as peft) and B
    ``[k, rows, r]`` (zeros), so training starts from the base model exactly.
    """

    def __init__(self, slices: list[ExpertSlice], lora_rank: int | None = None, lora_alpha: float = 32.0,
                 train_dtype: torch.dtype | None = None):
        super().__init__()
        self.slices = slices
        self.lora_rank, self.lora_alpha = lora_rank, float(lora_alpha)
        self.values = nn.ParameterDict()
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        self._frozen: dict[str, torch.Tensor] = {}
        self._handles = []
        self._overridden: list[nn.Module] = []  # owners running their per-expert forward
        self._gradients: dict[str, torch.Tensor] = {}  # key -> the selected experts' gradients [k, ...]
        for piece in slices:
            original = piece.gather() if lora_rank is not None else None
            if original is not None and train_dtype is not None:
                original = original.to(train_dtype)
            key = _key(piece.name)
            if lora_rank is None:  # parameters aliasing the base's rows: no copy
                rows = experts_view(piece.base, piece.dim, piece.block, piece.num)
                for e in piece.ids:
                    self.values[f"{key}__e{e}"] = nn.Parameter(rows[e], requires_grad=True)
            elif original.ndim == 3:  # [k, rows, cols]: a matrix per expert
                self._frozen[key] = original
                k, rows, cols = original.shape
                a = torch.empty(k, lora_rank, cols, dtype=original.dtype, device=original.device)
                for e in range(k):
                    nn.init.kaiming_uniform_(a[e], a=math.sqrt(5))
                self.lora_A[key] = nn.Parameter(a)
                self.lora_B[key] = nn.Parameter(torch.zeros(k, rows, lora_rank, dtype=original.dtype,
                                                            device=original.device))

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.lora_rank if self.lora_rank else 1.0

    def aliases(self, piece: ExpertSlice) -> list[nn.Parameter]:
        key = _key(piece.name)
        return [self.values[f"{key}__e{e}"] for e in piece.ids if f"{key}__e{e}" in self.values]

    def trained(self, piece: ExpertSlice) -> bool:
        return bool(self.aliases(piece)) or _key(piece.name) in self.lora_A

    def bind_gradients(self) -> SliceTrainer:
        """Give the selected experts of each fused tensor one contiguous gradient buffer ``[k, ...]`` (each
        expert's ``.grad`` a view of it), allocated once: zeroed in place every step rather than freed and
        taken again (which fragments the heap by the size of the activations), and reused to write the
        adapter's ``[k, ...]`` slices when training is done (:meth:`adapter_tensors`)."""
        for piece in self.slices:
            aliases = self.aliases(piece)
            if aliases and _key(piece.name) not in self._gradients:
                buffer = torch.zeros((len(aliases), *aliases[0].shape), dtype=aliases[0].dtype,
                                     device=aliases[0].device)
                for row, parameter in enumerate(aliases):
                    parameter.grad = buffer[row]
                self._gradients[_key(piece.name)] = buffer
        return self

    @property
    def binds_gradients(self) -> bool:
        return bool(self._gradients)

    def slice_values(self, piece: ExpertSlice, out: torch.Tensor | None = None) -> torch.Tensor:
        """The selected slices as the model uses them now, ``[k, ...]`` (differentiable for LoRA)."""
        aliases = self.aliases(piece)
        if aliases:
            return torch.stack([p.detach() for p in aliases], out=out)
        key = _key(piece.name)
        return self._frozen[key] + self.scale * torch.bmm(self.lora_B[key], self.lora_A[key])

    def attach(self) -> SliceTrainer:
        """Register the splicing hooks on every owner module (for selected experts of a transformers experts
        module: its per-expert forward, :mod:`.per_expert`)."""
        per_owner: dict[int, tuple[nn.Module, list[ExpertSlice]]] = {}
        for piece in self.slices:
            if not self.trained(piece):
                continue
            if self.aliases(piece) and piece.dim == 0 and piece.block == 1 and eager_forward(piece.owner):
                per_owner.setdefault(id(piece.owner), (piece.owner, []))[1].append(piece)
                continue
            index = torch.tensor(piece.ids, device=piece.base.device)
            layout = (piece.dim, piece.block, piece.num)

            def before(module, args, piece=piece, index=index, layout=layout):
                aliases = self.aliases(piece)
                if aliases:  # the parameters are the base's rows already
                    view = Alias.apply(piece.base, layout, piece.ids, *aliases)
                else:
                    view = Splice.apply(self.slice_values(piece), piece.base, index, *layout)
                module.__dict__[piece.attribute] = view  # shadows the frozen Parameter for this call

            def after(module, args, output, piece=piece):
                module.__dict__.pop(piece.attribute, None)

            self._handles.append(piece.owner.register_forward_pre_hook(before))
            self._handles.append(piece.owner.register_forward_hook(after))
        for owner, pieces in per_owner.values():
            owner.forward = per_expert_forward(owner, [self._selected_rows(piece) for piece in pieces])
            self._overridden.append(owner)
        return self

    def _selected_rows(self, piece: ExpertSlice):
        """(attribute, the fused tensor, {expert id: its parameter}, the Alias view maker) of an ``experts`` piece."""
        aliases = self.aliases(piece)
        layout = (piece.dim, piece.block, piece.num)
        return (piece.attribute, piece.base, dict(zip(piece.ids, aliases)),
                lambda: Alias.apply(piece.base, layout, piece.ids, *aliases))

    def detach_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for owner in self._overridden:
            owner.__dict__.pop("forward", None)
        self._overridden = []

    @torch.no_grad()
    def sync(self) -> None:
        """Write the current values into the model's tensors (after the last optimizer step)."""
        for piece in self.slices:
            if _key(piece.name) in self.lora_A:  # aliases live in the base already
                index = torch.tensor(piece.ids, device=piece.base.device)
                experts_view(piece.base, piece.dim, piece.block, piece.num)[index] = \
                    self.slice_values(piece).to(piece.base.dtype)

    def adapter_tensors(self, *, reuse_gradients: bool = False) -> dict[str, torch.Tensor]:
        """What the adapter stores: ``slice.<param>`` or ``lora_A.<param>`` / ``lora_B.<param>``.
        ``reuse_gradients`` (training done): the slices are written into the gradient buffers, no new memory."""
        tensors = {}
        for piece in self.slices:
            key = _key(piece.name)
            if self.aliases(piece):
                out = self._gradients.pop(key, None) if reuse_gradients else None
                if out is not None:
                    for parameter in self.aliases(piece):
                        parameter.grad = None
                tensors[f"slice.{piece.name}"] = self.slice_values(piece, out=out).cpu().contiguous()
            elif key in self.lora_A:
                tensors[f"lora_A.{piece.name}"] = self.lora_A[key].detach().cpu().contiguous()
                tensors[f"lora_B.{piece.name}"] = self.lora_B[key].detach().cpu().contiguous()
        return tensors


def apply_slice_tensors(model, tensors: dict[str, torch.Tensor], layout: dict[str, dict],
                        lora_scale: float = 1.0) -> None:
    """Merge adapter tensors into ``model`` in place: ``slice.X`` replaces the selected experts of
    parameter X; ``lora_A.X``/``lora_B.X`` add scale·B A to them (the same arithmetic as training)."""
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, spec in layout.items():
            if name not in parameters:
                raise UsageError(f"adapter names a parameter the model lacks: {name}")
            base = parameters[name]
            view = experts_view(base, spec["dim"], spec["block"], spec["num"])
            index = torch.tensor(spec["ids"], device=base.device)
            if f"slice.{name}" in tensors:
                view[index] = tensors[f"slice.{name}"].to(base.device, base.dtype)
            elif f"lora_A.{name}" in tensors:
                a = tensors[f"lora_A.{name}"].to(base.device)
                b = tensors[f"lora_B.{name}"].to(base.device)
                original = view[index].to(a.dtype)
                view[index] = (original + lora_scale * torch.bmm(b, a)).to(base.dtype)


__all__ = ["ExpertSlice", "SliceTrainer", "Splice", "apply_slice_tensors", "expert_slices", "experts_view"]
