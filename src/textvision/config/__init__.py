"""The configuration: the schema (one file, shipped in the package), validation, each step's typed
settings, variants and the generated config reference."""
