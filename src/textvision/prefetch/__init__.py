"""`prefetch`: fill the Hugging Face and torch caches on a machine with network."""
