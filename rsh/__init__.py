"""rsh: remote-sensing hashing in JAX/Flax."""
__version__ = "0.1.0"
