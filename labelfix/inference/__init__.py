"""Inference shared by repair, bench and calibration: prepare, run the model, finish the labels."""
