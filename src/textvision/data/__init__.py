"""Stage 1, `prepare_data`: labelled texts from any source -> `dataset.parquet`."""
