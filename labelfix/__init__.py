"""labelfix: complete incomplete semantic-segmentation labels with a label masked autoencoder (L-MAE).

The Python API is `labelfix.api`; importing `labelfix` alone loads nothing (the command's --help stays fast).
"""

__version__ = "0.1.0"
