"""Low-level ops with a torch reference and faster native versions."""
