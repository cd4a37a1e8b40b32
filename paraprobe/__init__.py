"""paraprobe: what each layer of a self-supervised speech model knows about paralinguistics."""

__version__ = "0.1.0"
