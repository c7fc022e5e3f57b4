"""Datasets for the built-in example; user data comes through `[data] factory`."""
