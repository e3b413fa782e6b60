"""Beam pipelines of altbeam (caption, features, writeback), their transforms, and the CLI."""
