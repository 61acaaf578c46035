"""Data: raw formats -> prepared Parquet (ID view + text view) -> batches."""
