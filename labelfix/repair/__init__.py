"""`labelfix repair`: settings, discovery and checks, the pipeline, reports, the review page."""
