"""Compression: quantize, prune, distill, evaluate (each method a handler; results are registry versions)."""
