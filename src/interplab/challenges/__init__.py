"""Challenges: generated interpretability puzzles with a sealed answer, a solver and a scorer."""
