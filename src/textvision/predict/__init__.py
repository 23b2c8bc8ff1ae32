"""`predict`: classify new texts with a bundle."""
