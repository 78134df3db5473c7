"""Tools for many runs: `clipig rate`, `clipig rank` and `clipig batch` (see docs/many-runs.md).

Each module has `main(argv) -> int`; `workers` runs render jobs here or on a Ray cluster and keeps the
per-run record files that make `rank` and `batch` resumable.
"""
