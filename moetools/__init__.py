"""moetools: interpret Mixture-of-Experts language models at the level of whole experts.

The library is importable without the CLI; each tool's logic lives in its own
module (``moetools.streams``, ``moetools.trace``, ...) and ``moetools.cli``
holds the thin click commands.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:  # one source of truth: the installed package metadata (pyproject.toml)
    __version__ = _version("moetools")
except PackageNotFoundError:  # running from a checkout via bin/ without install
    import re as _re
    from pathlib import Path as _Path

    _pyproject = _Path(__file__).resolve().parent.parent / "pyproject.toml"
    _match = _re.search(r'^version\s*=\s*"([^"]+)"', _pyproject.read_text(), _re.MULTILINE) if _pyproject.exists() else None
    __version__ = _match.group(1) if _match else "0+unknown"


def _register_monet_with_transformers() -> None:
    """Make transformers' Auto classes know MONET (``model_type="monet"``) without importing torch now.

    A meta-path hook waits for ``transformers.models.auto.configuration_auto`` /
    ``modeling_auto`` to be imported and then calls ``moetools.models.monet.register_config`` /
    ``register_models``; if they are imported already, registration happens at once.
    """
    import sys

    hooks = {"transformers.models.auto.configuration_auto": "register_config",
             "transformers.models.auto.modeling_auto": "register_models"}

    def run(function_name: str) -> None:
        from .models import monet

        getattr(monet, function_name)()

    class _MonetAutoRegistration:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name not in hooks:
                return None
            for finder in sys.meta_path:
                if isinstance(finder, _MonetAutoRegistration) or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    original = spec.loader.exec_module

                    def exec_module(module, _original=original, _function=hooks[name]):
                        _original(module)
                        run(_function)

                    spec.loader.exec_module = exec_module
                    return spec
            return None

    pending = False
    for name, function_name in hooks.items():
        if name in sys.modules:
            run(function_name)
        else:
            pending = True
    if pending and not any(isinstance(f, _MonetAutoRegistration) for f in sys.meta_path):
        sys.meta_path.insert(0, _MonetAutoRegistration())


_register_monet_with_transformers()
