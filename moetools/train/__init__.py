"""monet-train's logic: pretrain MONET (VD/HD) or a matched dense LLaMA / top-k MoE baseline.

``moetools.train.train(TrainOptions(data=..., output=..., arch="monet-vd", ...))`` writes a
directory that ``transformers.AutoModelForCausalLM.from_pretrained`` loads (MONET: with
``trust_remote_code=True``, from the ``configuration_monet.py`` / ``modeling_monet.py`` and the
``auto_map`` the directory carries, :mod:`moetools.models.monet.shipped`; moetools loads it without
remote code): ``config.json``, ``model.safetensors``, tokenizer files,
``training_metadata.json``, ``train_log.jsonl`` and ``checkpoint/`` (for ``--resume``).
Modules: :mod:`.data` (JSONL, tokenizer, packing), :mod:`.models` (archs and the matching rule),
:mod:`.loop` (the loop); the shared core (DDP or FSDP, checkpoints, loss) is :mod:`moetools.training`.
"""

from .loop import LOG_NAME, METADATA_NAME, TrainOptions, train
from .models import ARCHS

__all__ = ["ARCHS", "LOG_NAME", "METADATA_NAME", "TrainOptions", "train"]
