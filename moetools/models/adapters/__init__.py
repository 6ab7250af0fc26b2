"""Built-in adapters, one module per family group; importing this registers them."""

from . import deepseek, ernie, gpt_oss, softmax_topk  # noqa: F401

try:  # MONET plugs in when its model code is present (moetools/models/monet/)
    from . import monet  # noqa: F401
except ImportError:  # pragma: no cover - MONET model not installed
    pass
