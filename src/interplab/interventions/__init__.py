"""Interventions on a model's activations: ablations, fixed attention, patching."""
