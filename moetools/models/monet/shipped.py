"""The MONET code moetools ships inside the directories it writes, from this one place.

A MONET directory written by ``monet-train``, ``moe-tune merge`` of a MONET base, or moe-mask
(``remote`` mode) carries ``configuration_monet.py`` and ``modeling_monet.py``: the bytes of this
package's own modules, which import transformers and torch only (never moetools). With
:data:`AUTO_MAP` in ``config.json``, as the published MONET checkpoints have, a Python without
moetools loads the directory with ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)``
(and ``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True``); without
``trust_remote_code`` transformers refuses with its own message. moetools itself loads such a
directory without remote code: ``model_type="monet"`` is registered with the Auto classes
(:mod:`moetools.models.monet`), so the shipped files are never executed by moetools. A published MONET
checkpoint, whose files and ``auto_map`` are the release's own, is read the same way (its code is
never run); what moetools writes from it carries these files instead. moe-mask's
``remote`` mode copies the same two module files next to its own code (:mod:`moetools.mask.remote`),
so its check of a directory's code (``check_own_code``) and :func:`is_shipped` agree byte for byte.

    write_shipped(directory)          # copies the files, returns {"auto_map": AUTO_MAP}
    shipped_files()                   # {"configuration_monet.py": b"...", "modeling_monet.py": b"..."}
    is_shipped(directory)             # every MONET file present is byte for byte ours, auto_map ours
"""

from __future__ import annotations

import json
from pathlib import Path

#: the files, by name in the directory (the same names as this package's modules)
FILES = ("configuration_monet.py", "modeling_monet.py")
#: config.json's ``auto_map`` pointing at them
AUTO_MAP = {"AutoConfig": "configuration_monet.MonetConfig",
            "AutoModel": "modeling_monet.MonetModel",
            "AutoModelForCausalLM": "modeling_monet.MonetForCausalLM"}

_HERE = Path(__file__).resolve().parent


def shipped_files() -> dict[str, bytes]:
    """File name -> the exact bytes moetools writes into a MONET directory."""
    return {name: (_HERE / name).read_bytes() for name in FILES}


def write_shipped(directory) -> dict:
    """Write the MONET code files into ``directory``; return the config.json keys that point at them."""
    directory = Path(directory)
    for name, data in shipped_files().items():
        (directory / name).write_bytes(data)
    return {"auto_map": dict(AUTO_MAP)}


def add_to_directory(directory) -> None:
    """Write the code files and add :data:`AUTO_MAP` to an already saved MONET directory's config.json
    (rewritten under a temporary name, then renamed)."""
    import os

    directory = Path(directory)
    keys = write_shipped(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config.update(keys)
    partial = config_path.with_name("config.json.partial")
    partial.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(partial, config_path)


def is_shipped(directory) -> bool:
    """True when each of :data:`FILES` in ``directory`` is byte for byte :func:`shipped_files` and
    config.json's ``auto_map`` (if any) is :data:`AUTO_MAP`."""
    directory = Path(directory)
    ours = shipped_files()
    for name, data in ours.items():
        if not (directory / name).is_file() or (directory / name).read_bytes() != data:
            return False
    try:
        auto_map = json.loads((directory / "config.json").read_text()).get("auto_map")
    except (OSError, ValueError):
        return False
    return auto_map is None or auto_map == AUTO_MAP


__all__ = ["AUTO_MAP", "FILES", "add_to_directory", "is_shipped", "shipped_files", "write_shipped"]
