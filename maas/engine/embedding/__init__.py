"""The embedding engine: sentence encoders behind the dynamic batcher, in process or in a child."""
