"""Studies: each reproduces a published result end to end with calls into the library."""
