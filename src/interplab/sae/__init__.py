"""Sparse autoencoders: dictionary learning on any site of any hooked model."""
