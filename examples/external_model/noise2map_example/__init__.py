"""An example model package for the Noise2Map benchmark suite (see its README)."""
