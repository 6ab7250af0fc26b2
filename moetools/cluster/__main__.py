"""``python -m moetools.cluster``: print the directory that holds the cluster recipes."""

from . import DIRECTORY

print(DIRECTORY)
