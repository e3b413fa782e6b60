"""writeback."""
