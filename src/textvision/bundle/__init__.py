"""Portable model bundles: one folder that classifies raw texts without the run that made it."""
