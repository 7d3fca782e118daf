"""Analyses of trained models: each technique in its own module (superposition, pca, ...).

Import the module you need, e.g. ``from interplab.analysis import superposition``; this
package imports none of them itself.
"""
