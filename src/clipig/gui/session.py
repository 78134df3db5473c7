"""The live editor's training worker: one Engine in a background thread, and the state the page shows.

The training thread only does cheap things in its listener: it reads the statistics a few times per second
and, while a page is connected, copies the image a few times per second. PNG encoding and everything else
that talks to the page happens in the server's threads.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

SAMPLE_SECONDS = 0.2  # statistics and plot points (read in the training thread)
FRAME_SECONDS = 0.25  # image copies for the page, only while a page is connected
MAX_POINTS = 2000  # plot points kept; beyond that every other one is dropped
MAX_SNAPSHOTS = 40
SNAPSHOTS_PER_RUN = 10

TEMPLATE = """\
# Alt-S starts or continues training, Alt-X stops.
epochs: 300
targets:
  - features:
      - text: a curly spoon
    transforms:
      - random_shift: 0 1
"""


@dataclass
class Snapshot:
    id: int
    epoch: int
    pixels: torch.Tensor  # the unclamped [3, H, W] image on the CPU (continuing starts from it)
    png: bytes | None = None


class Refused(Exception):
    """A request the session cannot do now; str() is the message for the page."""


def error_info(error: BaseException, data: dict | None = None) -> dict:
    """An error as the page shows it: message, parameter path and the editor line when known."""
    from ..config.errors import ConfigError
    if isinstance(error, ConfigError):
        line = error.line if error.file in (None, "<config>") else None
        if line is None and error.path and data is not None:
            line = line_of(data, error.path)
        return {"message": error.message, "path": error.path, "line": line, "text": str(error)}
    return {"message": str(error), "path": "", "line": None, "text": str(error)}


def line_of(data: dict, path: str) -> int | None:
    """The editor line of a parameter path in loader data (LocDict/LocList remember lines)."""
    from ..config.errors import ConfigError
    from ..config.loader import parse_path
    try:
        parts = parse_path(path)
    except ConfigError:
        return None
    node, line = data, None
    for part in parts:
        try:
            loc = node.locs[part]
            node = node[part]
        except (AttributeError, KeyError, IndexError, TypeError):
            break
        if loc and loc[0] == "<config>" and loc[1]:
            line = loc[1]
    return line


class History:
    """Plot points: epoch, loss and the similarity of each feature (by label)."""

    def __init__(self):
        self.generation = 0  # changes when points are dropped or rewritten: pages then reload them all
        self.points: list[dict] = []

    def add(self, point: dict) -> None:
        self.points.append(point)
        if len(self.points) > MAX_POINTS:
            self.points = self.points[::2]
            self.generation += 1

    def truncate(self, epoch: int) -> None:
        self.points = [p for p in self.points if p["e"] <= epoch]
        self.generation += 1

    def clear(self) -> None:
        self.points = []
        self.generation += 1


class Session:
    """State of the live editor. Methods are called from the server's threads; the listener `on_event`
    runs in the training thread. `lock` guards everything the two share."""

    def __init__(self, file: Path | None = None, text: str | None = None):
        self.lock = threading.RLock()
        self.file = file
        self.draft = TEMPLATE if text is None else text  # the editor's text, so that a reopened page shows it
        self.saved_text = text if file is not None else None  # the file's text as last loaded or saved
        self.status = "idle"  # idle | loading | running | stopping | stopped | done | error
        self.message = ""
        self.error: dict | None = None
        self.training = None  # the Engine of the current or last run (only to stop it)
        self.last = None  # the last event of the current or last run
        self.plain_config = None  # the last run's config as written (for the sidecar)
        self.thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.pixels: torch.Tensor | None = None  # unclamped image to continue from (CPU), None = from `init`
        self.drawing: dict | None = None  # with it, the parameterization's tensors (a drawing goes on with them)
        self.epoch = 0
        self.epochs = 0
        self.loss: float | None = None
        self.rate = 0.0
        self.table = ""
        self.history = History()
        self.snapshots: list[Snapshot] = []
        self.snapshot_ids = itertools.count(1)
        self.version = 0  # bumps with every change the page should see
        self.frame: torch.Tensor | None = None  # the image for the page, [3, H, W] in [0, 1]
        self.frame_version = 0
        self.clients = 0  # connected pages; image copies are made only while > 0
        self.calls: collections.deque = collections.deque()  # functions to run in the training thread
        # listener bookkeeping (training thread only)
        self._loss_sum = None
        self._loss_count = 0
        self._last_sample = self._last_frame = 0.0
        self._rates: collections.deque = collections.deque()
        self._snapshot_every = 1

    # --- what the page reads --------------------------------------------------------------------------------

    def changed(self) -> None:
        self.version += 1

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def state(self, history_from: tuple[int, int] | None = None) -> dict:
        """The page's view of the session. `history_from` = (generation, count) the page has already."""
        with self.lock:
            generation, points = self.history.generation, self.history.points
            start = history_from[1] if history_from and history_from[0] == generation else 0
            start = min(start, len(points))
            remaining = max(0, self.epochs - self.epoch)
            return {
                "type": "state", "version": self.version, "status": self.status, "running": self.running,
                "message": self.message, "error": self.error, "epoch": self.epoch, "epochs": self.epochs,
                "rate": self.rate, "eta": remaining / self.rate if self.rate > 0 and self.running else None,
                "runtime": self.last.runtime if self.last is not None else 0.0, "loss": self.loss,
                "table": self.table, "file": str(self.file) if self.file else None,
                "continues": self.pixels is not None,
                "history": {"generation": generation, "from": start, "points": points[start:]},
                "snapshots": [{"id": s.id, "epoch": s.epoch} for s in self.snapshots],
            }

    def current_image(self) -> tuple[int, torch.Tensor | None]:
        with self.lock:
            if self.frame is None and self.pixels is not None:
                self.frame = self.pixels.clamp(0, 1)
            return self.frame_version, self.frame

    def snapshot(self, snapshot_id: int) -> Snapshot | None:
        with self.lock:
            return next((s for s in self.snapshots if s.id == snapshot_id), None)

    def set_draft(self, text: str) -> None:
        with self.lock:
            self.draft = text

    # --- commands -------------------------------------------------------------------------------------------

    def validate(self, text: str):
        """The validated config of `text` and its raw data; raises ConfigError like the CLI."""
        from ..config.loader import load_data
        from ..config.schema import validate
        data = load_data(texts=[text])
        return validate(data), data

    def start(self, text: str, fresh: bool = False) -> None:
        """Start training with `text`: continuing from the current pixels and epoch unless `fresh` or there are
        none. Raises Refused (running, finished) or ConfigError (invalid text)."""
        from ..config.errors import ConfigError
        from ..config.loader import load_data
        from ..config.schema import validate
        with self.lock:
            if self.running:
                raise Refused("training is running; stop it first (Alt-X)")
            self.draft = text
            data = None
            try:
                data = load_data(texts=[text])
                plain = validate(data)
            except ConfigError as e:
                self.error = error_info(e, data)
                self.changed()
                raise
            if fresh:
                self._clear()
            state = None  # the run goes on from the pixels and epoch it stopped at, as `clipig resume` does
            if self.pixels is not None:
                if self.epoch >= plain.epochs():
                    raise Refused(f"finished: epoch {self.epoch} of {plain.epochs()}; raise `epochs` to go on, "
                                  f"or Reset to start again from noise")
                state = {"epoch": self.epoch, "image": self.pixels, "drawing": self.drawing}
            self.plain_config = plain
            self.error = None
            self.status, self.message = "loading", "loading the model"
            self.epochs = plain.epochs()
            self.epoch = plain.start_epoch() if state is None else state["epoch"]
            self.stop_flag.clear()
            self.thread = threading.Thread(target=self._work, args=(plain, data, state), name="clipig-training",
                                           daemon=True)
            self.thread.start()
            self.changed()

    def stop(self, wait: bool = False) -> None:
        """Ask the training to stop after the current epoch; with `wait`, until it has."""
        with self.lock:
            thread = self.thread
            if self.running:
                self.stop_flag.set()
                if self.training is not None:
                    self.training.stop()
                self.status, self.message = "stopping", "stopping after this epoch"
                self.changed()
        if wait and thread is not None:
            thread.join()

    def reset(self, text: str) -> None:
        """Stop, forget the pixels, epoch, plots and snapshots, and start again from noise."""
        self.stop(wait=True)
        self.start(text, fresh=True)

    def restore(self, snapshot_id: int) -> int:
        """Go back to a snapshot: its pixels and epoch are what the next start continues from."""
        self.stop(wait=True)
        with self.lock:
            snap = self.snapshot(snapshot_id)
            if snap is None:
                raise Refused("that snapshot is gone")
            self.pixels, self.epoch, self.drawing = snap.pixels.clone(), snap.epoch, None  # (picture only)
            self.frame, self.frame_version = snap.pixels.clamp(0, 1), self.frame_version + 1
            self.history.truncate(snap.epoch)
            self.status, self.message = "stopped", f"back at the snapshot of epoch {snap.epoch}; Alt-S continues"
            self.changed()
            return snap.epoch

    def in_worker(self, fn):
        """Run fn() in the training thread between two epochs if training runs, else here; returns its result."""
        done, result = threading.Event(), {}

        def call():
            try:
                result["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                result["error"] = e
            done.set()

        with self.lock:
            queued = self.running and self.status in ("running", "stopping")
            if queued:
                self.calls.append(call)
        if not queued:
            with self.lock:
                call()
        elif not done.wait(30):  # queued calls run between epochs, or when the run ends
            raise Refused("training did not answer in time")
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def save_image(self) -> tuple[Path, Path | None]:
        """Save the current image as the CLI would (never overwriting) with its sidecar YAML."""
        from ..files.output import output_path, png_text, reserve, save_png, sidecar_text, write_sidecar

        def save():
            run, config = self.last, self.plain_config
            if run is None or config is None or (self.pixels is None and not self.running):
                raise Refused("nothing to save yet: start training first (Alt-S)")
            path = reserve(output_path(config.output(), str(self.file) if self.file else None))
            image = run.image() if self.running else self.pixels.clamp(0, 1)
            reason = "done" if run.epoch >= run.epochs else "stopped"
            save_png(image, path, png_text(run.facts(), reason, config))
            sidecar = path.with_suffix(".yaml")
            if self.file is not None and sidecar.resolve() == self.file.resolve():
                return path, None  # not even a new, still unsaved config file is taken for the sidecar
            written = write_sidecar(sidecar, sidecar_text(config, run.facts(), reason))
            return path, sidecar if written else None

        return self.in_worker(save)

    def snapshots_video(self) -> bytes:
        """The snapshots as an MP4, scaled to the last one's size (a few seconds long)."""
        from ..files.video import frame_of, video_bytes
        with self.lock:
            pictures = [s.pixels.clamp(0, 1) for s in self.snapshots]
        if not pictures:
            raise Refused("no snapshots yet: start training first (Alt-S)")
        height, width = pictures[-1].shape[1:]
        size = (width + width % 2, height + height % 2)
        return video_bytes([frame_of(p, size) for p in pictures], fps=max(1.0, len(pictures) / 8))

    def shutdown(self) -> None:
        self.stop(wait=False)
        if self.thread is not None:
            self.thread.join(timeout=10)

    # --- the training thread --------------------------------------------------------------------------------

    def _clear(self) -> None:
        self.pixels, self.epoch, self.loss, self.rate, self.table, self.drawing = None, 0, None, 0.0, "", None
        self.frame, self.frame_version = None, self.frame_version + 1
        self.history.clear()
        self.snapshots.clear()

    def _work(self, config, data, state) -> None:
        from ..run.engine import open_run
        engine = None
        try:
            engine = open_run(config, [self.on_event], state=state)
            with self.lock:
                self.training = engine
                if self.stop_flag.is_set():
                    engine.stop()
            engine.run()
        except Exception as e:  # noqa: BLE001 - every failure is shown on the page
            from ..config.errors import ConfigError
            from ..config.expressions import ExpressionError
            from ..critic.weights import ModelError
            if not isinstance(e, (ConfigError, ExpressionError, ModelError)):
                traceback.print_exc(file=sys.stderr)
            with self.lock:
                self.error = error_info(e, data)
                self.status, self.message = "error", self.error["text"]
                if engine is not None:
                    self._keep(engine)
                self.changed()
        finally:
            with self.lock:
                while self.calls:
                    self.calls.popleft()()

    def _keep(self, run) -> None:
        """Remember where the run is (an event of it, or its engine), so that the next start continues there."""
        self.pixels = run.image(unclamped=True)
        self.epoch = run.epoch
        state = run.state() if hasattr(run, "state") else run.state_dict()  # an event, or the engine
        self.drawing = state["parameterization"]  # a drawing goes on with its polygons (Engine._keep_drawing)
        self.frame, self.frame_version = self.pixels.clamp(0, 1), self.frame_version + 1

    def on_event(self, event) -> None:
        now = time.monotonic()
        self.last = event
        if event.kind == "start":
            with self.lock:
                self.status = "stopping" if self.stop_flag.is_set() else "running"
                self.message = f"training from epoch {event.epoch}"
                self.epochs, self.epoch = event.epochs, event.epoch
                self._snapshot_every = max(1, event.epochs // SNAPSHOTS_PER_RUN)
                self._loss_sum, self._loss_count = None, 0
                self._rates = collections.deque([(now, event.epoch)])
                self._last_sample = self._last_frame = now
                if not self.snapshots or self.snapshots[-1].epoch != event.epoch:
                    self._add_snapshot(event)
                self.changed()
            return
        if event.kind == "epoch":
            loss = event.loss
            if loss is not None:
                self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
                self._loss_count += 1
            if now - self._last_sample >= SAMPLE_SECONDS or event.epoch >= event.epochs:
                self._sample(event, now)
            if self.clients and now - self._last_frame >= FRAME_SECONDS:
                self._last_frame = now
                frame = event.image()
                with self.lock:
                    self.frame, self.frame_version = frame, self.frame_version + 1
            if event.epoch % self._snapshot_every == 0:
                with self.lock:
                    self._add_snapshot(event)
                    self.changed()
            while self.calls:
                self.calls.popleft()()
            return
        # end
        self._sample(event, now)
        with self.lock:
            self._keep(event)
            if not self.snapshots or self.snapshots[-1].epoch != event.epoch:
                self._add_snapshot(event)
            reason = event.reason
            self.status = "done" if reason == "done" else "stopped"
            self.message = (f"finished {event.epoch} epochs" if reason == "done" else
                            f"stopped at epoch {event.epoch}; Alt-S continues")
            self.rate = 0.0
            self.changed()

    def _sample(self, event, now: float) -> None:
        """Statistics, rate and a plot point (training thread, a few times per second)."""
        from ..files.report import statistics_table
        self._last_sample = now
        total = event.statistics()
        loss = float(self._loss_sum) / self._loss_count if self._loss_count else None
        self._loss_sum, self._loss_count = None, 0
        similarity = {}
        for t in total:
            for f in t["features"]:
                if f["similarity"]["mean"] is not None:
                    similarity[f"{t['name']}: {f['label']}"] = round(f["similarity"]["mean"], 4)
                    for model, sim in f.get("models", {}).items():  # an ensemble: each model's similarity too
                        similarity[f"{t['name']}: {f['label']} [{model}]"] = round(sim["mean"], 4)
        self._rates.append((now, event.epoch))
        while len(self._rates) > 2 and now - self._rates[0][0] > 3.0:
            self._rates.popleft()
        (t0, e0), (t1, e1) = self._rates[0], self._rates[-1]
        with self.lock:
            self.epoch = event.epoch
            self.rate = (e1 - e0) / (t1 - t0) if t1 > t0 else 0.0
            if loss is not None:
                self.loss = loss
                self.history.add({"e": event.epoch, "l": round(loss, 6), "s": similarity})
            self.table = statistics_table(total)
            self.changed()

    def _add_snapshot(self, event) -> None:
        self.snapshots.append(Snapshot(next(self.snapshot_ids), event.epoch, event.image(unclamped=True)))
        del self.snapshots[:-MAX_SNAPSHOTS]
