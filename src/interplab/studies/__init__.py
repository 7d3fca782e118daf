"""Studies: each reproduces a published result by composing library calls."""
