"""Studies: each reproduces a published result end to end by composing library calls."""
