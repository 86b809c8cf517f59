"""AllMicro Data: the image repository of a cross-border microscopy network."""

__version__ = "0.1.0"
