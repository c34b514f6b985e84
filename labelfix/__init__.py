"""labelfix: complete incomplete semantic-segmentation labels with a label masked autoencoder (L-MAE)."""

__version__ = "0.1.0"
