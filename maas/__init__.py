"""maas: model as a service. Train, compress, store and serve neural networks."""

__version__ = "0.1.0"
