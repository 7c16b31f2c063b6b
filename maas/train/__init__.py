"""Training: one YAML file trains a model on one process, many processes (DDP) or a parameter
server, checkpoints it, and registers the result in the store."""
