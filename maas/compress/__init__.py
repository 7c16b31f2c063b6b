"""Compression: quantize, prune, distill, evaluate. Each method is one object of the table in methods.py
(the contract: method.py); every result is a registry version written by output.py."""

DEFAULT_GROUP = 32  # weights sharing one scale, unless asked otherwise
