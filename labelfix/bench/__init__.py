"""`labelfix bench`: the paper's metric, baselines, figures and the plot."""
