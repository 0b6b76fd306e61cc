"""barcode devices."""
