"""Interventions that write a model's activations: ablation, fixed attention, patching, attribution, scrubbing."""
