"""Running an experiment for the command line: the progress bar and statistics, the files of the run (image,
sidecar, state, video) and Ctrl-C (the first ends the run after the epoch, the second at once)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path


class Progress:
    """Listener: a progress bar (verbose >= 1) and, at verbose 2, the statistics every 4 seconds and at the end
    (the original's rhythm)."""

    def __init__(self, verbose: int, stats_every: float = 4.0, stream=None):
        self.verbose, self.stats_every, self.stream = verbose, stats_every, stream or sys.stderr
        self.bar = None
        self.last_bar = self.last_stats = 0.0

    def __call__(self, event) -> None:
        if self.verbose < 1:
            return
        from tqdm import tqdm

        from .report import run_line, statistics_table
        now = time.monotonic()
        if event.kind == "start":
            self.bar = tqdm(total=event.epochs, initial=event.epoch, unit="epoch", file=self.stream,
                            dynamic_ncols=True, mininterval=0.25)
            chosen = event.facts().chosen_seed
            if chosen is not None:
                self.bar.write(f"starts: going on as the start of seed {chosen}", file=self.stream)
            self.last_stats = now
        elif event.kind == "epoch" and self.bar is not None:
            self.bar.update(1)
            if now - self.last_bar > 0.25:
                self.bar.set_postfix(loss=f"{float(event.loss):.4f}", refresh=False)
                self.last_bar = now
            if self.verbose >= 2 and now - self.last_stats >= self.stats_every:
                self.bar.write(run_line(event) + "\n" + statistics_table(event.statistics()), file=self.stream)
                self.last_stats = now
        elif event.kind == "end" and self.bar is not None:
            self.bar.close()
            if self.verbose >= 2:
                print(run_line(event) + "\n" + statistics_table(event.statistics()), file=self.stream)


def run_to_files(config, wanted: Path, state: dict | None = None, continues: Path | None = None) -> int:
    """Run an experiment into its files (image, sidecar, state, video) with progress output; the exit code.
    `state` and `continues`: the state to go on from and the image it belongs to (clipig resume)."""
    return runs_to_files([config], wanted, state, continues)


def runs_to_files(configs: list, wanted: Path, state: dict | None = None, continues: Path | None = None) -> int:
    """`run_to_files` of several experiments together (`--repeat`: one experiment, other seeds), in one CLIP
    pass per epoch (clipig.run.together); each is written like a run of its own (x.png, x-1.png, ...), the
    progress bar is the first run's."""
    from ..run.engine import open_run
    from ..run.together import Together
    from .output import OutputWriter
    from .statefile import StateWriter, state_path
    from .video import VideoWriter

    runs = []
    for i, config in enumerate(configs):
        writer = OutputWriter(config, wanted, continues)
        video = [VideoWriter(config, lambda w=writer: w.path, in_place=continues is not None)] \
            if config.video.file is not None else []
        states = StateWriter(lambda w=writer: w.path and state_path(w.path), config.autosave())
        progress = [Progress(config.verbose())] if i == 0 else []
        runs.append((open_run(config, [*progress, writer, *video, states], state=state), writer, video))
    engines = [engine for engine, _, _ in runs]
    try:
        with stop_on_interrupt(*engines):
            outcomes = [engines[0].run()] if len(engines) == 1 else Together(engines).run()
    except KeyboardInterrupt:
        outcomes = [None] * len(engines)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome  # after every run saved what exists
    code = 0
    for (engine, writer, video), reason in zip(runs, outcomes):
        if not isinstance(reason, str) or reason == "interrupted":
            print(f"\ninterrupted at epoch {engine.epoch}; saved {writer.path}; `clipig resume {writer.path}` goes "
                  "on", file=sys.stderr)
            code = 130
        elif engine.config.verbose() >= 1:
            print(f"saved {writer.path}" + (f" and {video[0].target}" if video else ""), file=sys.stderr)
    return code


@contextlib.contextmanager
def stop_on_interrupt(*engines):
    """The first Ctrl-C ends the runs after the current epoch (their state is then exact), a second one at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if any(engine.stop_requested.is_set() for engine in engines):
            raise KeyboardInterrupt
        for engine in engines:
            engine.stop("interrupted")
        print("\nstopping after this epoch (Ctrl-C again stops at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
