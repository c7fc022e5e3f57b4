"""hwprune: hardware-aware structured pruning with measured ONNX Runtime latency as the search currency."""

__version__ = "0.1.0"
