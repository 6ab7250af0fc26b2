"""``python -m moetools.tune`` = ``moe-tune`` (for ``torchrun -m moetools.tune``)."""

from ..cli.tune import main

if __name__ == "__main__":
    main()
