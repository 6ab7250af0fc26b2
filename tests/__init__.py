"""The tests: one folder per moetools package (tests/<package>/), tests/project/ for the checkout as a whole, shared helpers here."""
