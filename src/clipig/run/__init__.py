"""The run layer: the engine that trains one experiment epoch by epoch and tells listeners (engine, events),
the targets' losses and statistics (targets), and what keeps a run safe (passes: memory, guard: NaN)."""
