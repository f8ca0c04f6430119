"""vitsae: sparse autoencoders for the features that vision models learn."""

__version__ = "0.1.0"
