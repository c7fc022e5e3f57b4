"""Structured channel pruning: coupled groups (Torch-Pruning), masks, and the IMP loop."""
