"""Structured channel pruning: coupled channel groups and physical removal (Torch-Pruning), and masks."""
