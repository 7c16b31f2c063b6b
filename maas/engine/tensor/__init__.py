"""Tensor models: backends (PyTorch, ONNX Runtime) behind the dynamic batcher, signatures checked."""
