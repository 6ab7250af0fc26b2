"""``python -m moetools.train`` = ``monet-train`` (handy under ``torchrun -m moetools.train``)."""

from ..cli.monet_train import main

if __name__ == "__main__":
    main()
