"""Noise2Map benchmark suite: data → pretrain → train → evaluate → tables."""

__version__ = "0.1.0"
