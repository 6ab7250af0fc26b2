"""The training core monet-train (:mod:`moetools.train`) and moe-tune (:mod:`moetools.tune`) share, and
whose per-domain loss moe-eval (:mod:`moetools.eval`) uses too.

Modules: :mod:`.distributed` (torchrun process group, DDP or FSDP, autocast, clipping),
:mod:`.sharding` (FSDP2 details), :mod:`.checkpoint` (pickle-free checkpoints, schedule, the
non-finite stop), :mod:`.optimizer` (AdamW and its schedule), :mod:`.stopping` (step budget and time
cap), :mod:`.log` (the JSON-lines log), :mod:`.options` (shared checks), :mod:`.loss` (next-token
loss per sequence and per domain).
"""
