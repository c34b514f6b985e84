"""The networks: L-MAE (the paper's figure, in lmae.py), its parts, the image encoder, the small heads."""
