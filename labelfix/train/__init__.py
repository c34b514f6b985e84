"""`labelfix train`: samples, damage, the training loop, and the steps that finish a bank."""
