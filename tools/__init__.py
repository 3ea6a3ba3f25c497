"""Thin programs over the packages: simulator, importers, replay, benchmarks, log readers."""
