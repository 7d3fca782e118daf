"""Interventions on activations: ablation, patching and attribution."""
