"""Datasets: MovieLens, RecBole atomic files or a synthetic generator, loaded into a Dataset."""
