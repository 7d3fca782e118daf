"""Analyses of activations and weights: PCA, directions, filters and more."""
