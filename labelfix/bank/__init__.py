"""A model bank: its manifest and weights, loaded and checked."""
