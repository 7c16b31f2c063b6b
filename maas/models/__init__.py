"""nn.Modules only. Nothing here knows about serving or training."""
