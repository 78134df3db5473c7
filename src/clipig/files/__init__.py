"""The files of a run: PNG and sidecar (output), provenance, statistics tables (report), videos, state files,
and running an experiment into its files with progress (runner). Listeners of the run layer's events."""
