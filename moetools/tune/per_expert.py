"""``experts`` mode on transformers' experts modules: no gradient of full size, no stored activations.

Transformers 5 runs a layer's experts from fused tensors ``[E, ...]``; its default kernel
(``grouped_mm``) computes the gradient of the whole tensor in the backward pass, 3/4 of it for
frozen experts when 16 of 64 train, and autograd keeps every expert's activations. Instead, a module
with selected experts runs its family's own per-expert forward (the ``eager`` one of
``@use_experts_implementation``, which reads ``tensor[e]`` one expert at a time) and sees
:class:`SelectedRows` in place of each fused tensor: ``[e]`` is expert e's own parameter when e is
selected (its gradient goes there, and nowhere else) and a frozen row otherwise (no gradient); any
other use of the tensor falls back to the slices' ``Alias`` view (correct, with a full-size gradient).
The module's forward is recomputed in the backward pass (``torch.utils.checkpoint``, non-reentrant):
only its inputs are kept, and the recomputation is bit-identical. A selected expert no token reached
in a step gets a zero gradient (:class:`Touch`), as a row of a fused tensor would, so AdamW's moments
and DDP see every selected expert every step.
"""

from __future__ import annotations

import torch
from torch import nn


class Touch(torch.autograd.Function):
    """``output`` unchanged, with a zero gradient for each of ``parameters`` (selected experts the forward
    did not read: no token was routed to them)."""

    @staticmethod
    def forward(ctx, output, *parameters):
        ctx.shapes = [(p.shape, p.dtype, p.device) for p in parameters]
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad):
        return (grad, *(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.shapes))


def _single_index(index) -> int | None:
    """The expert id of ``tensor[index]`` when ``index`` picks one entry of dim 0 (int or 0-d integer tensor)."""
    if isinstance(index, tuple) and len(index) == 1:
        index = index[0]
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    if isinstance(index, torch.Tensor) and index.ndim == 0 and not index.is_floating_point() \
            and index.dtype != torch.bool:
        return int(index)
    return None


_METADATA = {"size", "dim", "numel", "__len__", "__get__"}  # shape, dtype, ... (property getters): no data


class SelectedRows(torch.Tensor):
    """A fused expert tensor as a per-expert forward sees it: ``[e]`` is expert e's trainable parameter
    when e is selected, its frozen row (no gradient) otherwise; anything else runs on ``full()`` (the
    :class:`Alias` view: correct, with a gradient of full size)."""

    @staticmethod
    def __new__(cls, base: torch.Tensor, rows: dict[int, nn.Parameter], full):
        view = base.detach().as_subclass(cls)
        view._rows, view._full, view._frozen, view.read = rows, full, base.detach(), set()
        return view

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        me = args[0] if args and type(args[0]) is cls else None
        if me is not None and func is torch.Tensor.__getitem__:
            expert = _single_index(args[1])
            if expert is not None:
                if expert < 0:
                    expert += me._frozen.shape[0]
                if expert in me._rows:
                    me.read.add(expert)
                    return me._rows[expert]
                return me._frozen[expert]
        if me is not None and getattr(func, "__name__", "") in _METADATA:
            args = (me._frozen, *args[1:])  # shape, dtype, size(): no autograd node needed
        else:
            full = {}

            def swap(value):
                if type(value) is cls:
                    if id(value) not in full:
                        full[id(value)] = value._full()
                        value.read.update(value._rows)
                    return full[id(value)]
                return value

            args = tuple(swap(a) for a in args)
            kwargs = {k: swap(v) for k, v in kwargs.items()}
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def eager_forward(module: nn.Module):
    """The per-expert (``eager``) forward of a transformers experts module, bound to it; None for others."""
    forward = getattr(type(module).forward, "__wrapped__", None)
    if forward is None or not hasattr(module, "config") or not hasattr(module, "_apply_gate"):
        return None  # not a @use_experts_implementation class
    return forward.__get__(module)


def per_expert_forward(module: nn.Module, selected: list[tuple]):
    """``module``'s forward as described above; ``selected``: (attribute, fused tensor, {expert id: parameter},
    Alias view maker) per fused tensor with selected experts."""
    eager = eager_forward(module)
    calls: list[list[SelectedRows]] = []

    def run(*args, **kwargs):
        views = {attribute: SelectedRows(base, rows, full) for attribute, base, rows, full in selected}
        module.__dict__.update(views)  # shadows the frozen Parameters for this call
        try:
            output = eager(*args, **kwargs)
        finally:
            for attribute in views:
                module.__dict__.pop(attribute, None)
        calls.append(list(views.values()))
        return output

    def forward(*args, **kwargs):
        calls.clear()
        if not torch.is_grad_enabled():
            return run(*args, **kwargs)
        from torch.utils.checkpoint import checkpoint

        output = checkpoint(run, *args, use_reentrant=False, **kwargs)
        unread = [p for view in calls[0] for e, p in view._rows.items() if e not in view.read]
        return Touch.apply(output, *unread) if unread and isinstance(output, torch.Tensor) else output

    return forward


__all__ = ["SelectedRows", "Touch", "eager_forward", "per_expert_forward"]
