"""Compression: quantize, prune, distill, evaluate (each method a handler; results are registry versions)."""

DEFAULT_GROUP = 32  # weights sharing one scale, unless asked otherwise
AUTO_GROUP = (
    -1
)  # the command line's default: DEFAULT_GROUP, or one scale per channel where that is the only way
