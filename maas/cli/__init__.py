"""The `maas` command: one module per verb group."""
