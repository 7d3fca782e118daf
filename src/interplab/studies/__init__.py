"""Studies: end-to-end reproductions of published results; each composes library calls."""
