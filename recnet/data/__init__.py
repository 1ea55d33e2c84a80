"""Datasets: loaders turn MovieLens, RecBole atomic files or a synthetic generator into a Dataset."""
