"""`starts`: a run begun several times, from the seeds `seed`, `seed + 1`, ..., trained together for
`starts.epochs` epochs; the run goes on as the start whose loss was lowest over the second half of those
epochs. Pictures of one prompt differ most in what their first epochs settle (which colour the background
takes, where the thing sits), and the critic's loss tells early which start it likes (docs/quality.md).

The run that goes on is exactly the run of the chosen start's seed alone (runs together give each run's own
picture), continued in the run's own engine: its files, listeners and recorded `seed` stay the run's, so
that the recorded configuration gives the same picture again. The starts before the choice are not shown to
listeners (no snapshots, no video frames)."""

from __future__ import annotations


def choose(engine, together_cls) -> None:
    """Make `engine` (a run at its first epoch, not a continuation) go on as the best of its starts."""
    count, epochs = engine.config.starts.count(), engine.config.starts.epochs()
    if count < 2 or engine.continued or engine.epoch != engine.config.start_epoch():
        return
    begin = engine.epoch
    end = min(engine.epochs, begin + epochs)
    others = [sibling(engine, engine.seed + k) for k in range(1, count)]
    losses: dict = {}

    def watch(event, run):
        if event.kind == "epoch" and event.loss is not None and event.epoch > (begin + end) / 2:
            losses[run] = losses.get(run, 0.0) + float(event.loss)
        if event.kind == "epoch" and event.epoch >= end:
            event.stop("start chosen")

    listeners, engine.listeners = engine.listeners, []
    try:
        for run in [engine, *others]:
            run.listeners = [lambda event, run=run: watch(event, run)]
        outcomes = together_cls([engine, *others], choose=False).run()
    finally:
        engine.listeners = listeners
    finished = [r for r, o in zip([engine, *others], outcomes) if not isinstance(o, BaseException)]
    if engine not in finished:
        raise outcomes[0]
    best = min(finished, key=lambda r: losses.get(r, float("inf")))
    engine.stop_requested.clear()
    engine.chosen_seed = best.seed
    if best is not engine:
        engine.load_state_dict({**best.state_dict(), "listeners": {}})


def sibling(engine, seed: int):
    """A run of the engine's experiment and critic with another seed, without listeners."""
    return type(engine)(engine.config, engine.critic, seed=seed)
