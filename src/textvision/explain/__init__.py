"""`explain`: word, pixel, layer and feature attributions of a bundle's predictions."""
