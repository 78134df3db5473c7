"""Run many render jobs: in this process, in worker processes, or as Ray tasks; retry, progress, records.

A job is a plain dict (picklable, also for Ray):
  name     where its files go, relative to the output folder and without suffix ("runs/run-0007")
  data     the complete experiment data (plain dicts and lists, seed filled in)
  stop_at  optional: stop after this epoch (the schedule still runs over `epochs`)
  meta     fields copied into the record (run number, grid values, ...)
  from     optional: the name of another job of the same experiment data whose state this one may start from
           (rank continues its best runs so)

A worker returns the PNG bytes, the sidecar text, the final state and the numbers; only the driver writes
files, so a Ray cluster without a shared file system fills the same output folder. Each finished job leaves
`NAME.png`, `NAME.yaml`, `NAME.state` and, written last and atomically, `NAME.json`: the record. A job whose
record exists (for the same experiment data) is read back instead of rendered again. On this machine (not on
Ray) a worker also saves the state itself while it runs (`autosave`, and at its end), so that a run stopped
half-way goes on from there (see clipig.state).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..config.errors import ConfigError
from ..files.output import atomic_write
from ..files.report import duration
from ..run import together
from ..run.threads import configure, usable_cores

RETRIES = 1
_DEVICE: str | None = None  # the device of this worker process, set by _init_worker
UNKEYED = ("device", "verbose", "output", "snapshot_interval", "autosave", "video", "views_per_pass")  # parameters
# that do not change the image (views_per_pass: only within floating-point rounding)


def add_options(p: argparse.ArgumentParser, every: str = "") -> None:
    """Parameter overrides and where the work runs, shared by `rank` and `batch`."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help=f"override a parameter{every} (repeatable)")
    p.add_argument("--model", help="shorthand for --set model=M")
    p.add_argument("--device", help="shorthand for --set device=D")
    p.add_argument("--workers", type=int, help="parallel runs: worker processes here (default: one per GPU, "
                   "or 1 on the CPU, which runs in this process); with Ray the most tasks at once")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this machine; ray: tasks on a Ray cluster (pip install 'clipig[ray]')")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a new local Ray instance)")
    together.add_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def overrides(args) -> list[str]:
    """--set overrides, then the --model/--device shorthands."""
    from ..config.loader import shorthand_overrides
    return args.overrides + shorthand_overrides({"model": args.model, "device": args.device})


def _keyed(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in UNKEYED}


def job_key(job: dict) -> str:
    """Fingerprint of what a job renders: the experiment data and the contents of the image files it reads
    (the start pixels are left out: they follow from `meta`)."""
    text = json.dumps([_keyed(job["data"]), job.get("stop_at"), job.get("meta"), _file_digests(job["data"])],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_key(data: dict) -> str:
    """Fingerprint of an experiment's data (and the image files it reads): a state with this key belongs to
    any job of this data."""
    text = json.dumps([_keyed(data), _file_digests(data)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digests(data: dict) -> list:
    images = [(data.get("init") or {}).get("image")] + [
        f.get("image") for t in data.get("targets") or [] if isinstance(t, dict)
        for f in t.get("features") or [] if isinstance(f, dict)]
    return [_file_digest(i) for i in images]


def _file_digest(path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if isinstance(path, str) else None
    except (OSError, ValueError):
        return None  # a URL, or a file that is missing (its run fails with a message)


# ---------------------------------------------------------------- inside a worker

def _init_worker(devices, threads: int) -> None:
    import signal
    global _DEVICE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and ends the workers
    _DEVICE = devices.get()
    configure(threads)


def _start_state(job: dict, key: str) -> dict | None:
    """The job's own state (a run stopped half-way), else the state of the job it continues, if one fits."""
    from ..files.statefile import load
    for path in (job.get("state"), job.get("from_state")):
        if path and Path(path).is_file():
            with contextlib.suppress(ConfigError):
                state = load(path)
                if state.get("key") == key and state["epoch"] <= (job.get("stop_at") or state["epochs"]):
                    return state
    return None


def render_job(job: dict) -> dict:
    """Render one job (see `render_group`); its error is raised."""
    result = render_group([job])[0]
    if isinstance(result, BaseException):
        raise result
    return result


def render_group(jobs: list[dict]) -> list:
    """Render jobs together (clipig.run.together: one CLIP pass per epoch for all; each gives the image it gives
    alone), the critic loaded once per process (the critic module caches it); per job its result or its error.
    With `job['state']` (a path on this machine) a run goes on from its state and keeps it there."""
    from ..run.together import Together

    results: list = [None] * len(jobs)
    opened = []
    for i, job in enumerate(jobs):
        try:
            opened.append((i, job, *_open_job(job)))
        except Exception as e:  # noqa: BLE001 - that job fails, the others go on
            results[i] = e
    going = [o for o in opened if o[2].epoch < (o[1].get("stop_at") or o[2].epochs)]
    if len(going) == 1:
        reasons = [going[0][2].run()]
    else:
        reasons = Together([o[2] for o in going]).run() if going else []
    ended = dict(zip((o[0] for o in going), reasons))
    for i, job, engine, config in opened:
        reason = ended.get(i, "done")
        try:
            results[i] = reason if isinstance(reason, BaseException) else _result(job, engine, config, reason)
        except Exception as e:  # noqa: BLE001
            results[i] = e
    return results


def _open_job(job: dict) -> tuple:
    """The engine of a job (its stop, its state file) and its config."""
    from ..config.schema import validate
    from ..files.statefile import StateWriter
    from ..run.engine import open_run

    config = validate(job["data"])
    device = _DEVICE if _DEVICE and config.device() == "auto" else config.device()
    stop_at = job.get("stop_at")
    key = data_key(job["data"])
    state = _start_state(job, key) if job.get("state") else None

    def stopper(event):
        if event.kind == "epoch" and event.epoch >= stop_at:
            event.stop()

    listeners = [stopper] if stop_at else []
    if job.get("state"):
        listeners.append(StateWriter(lambda: Path(job["state"]), config.autosave(), key))
    return open_run(config, listeners, device, state), config


def _result(job: dict, engine, config, reason: str) -> dict:
    """The PNG, sidecar, state (unless written on this machine) and record of a finished run."""
    import torch

    from ..critic.views import quantize
    from ..files.output import png_text, sidecar_text, write_png
    from ..files.statefile import to_bytes, wrapped

    stop_at = job.get("stop_at")
    image = quantize(engine.image())  # exactly the PNG's pixels: `clipig rate` of the file gives the same
    targets = engine.targets
    with torch.no_grad():
        used = set().union(*(t.uses for t in targets))  # the models of the ensemble that judge some target
        features = engine.critic.encode([image[None].to(engine.device)], [used])[0]
        sims = [s for t in targets for s in t.similarity(features)[0].tolist()]
    if reason == "stopped" and stop_at and engine.epoch >= stop_at:
        reason = "done"
    facts = engine.facts()
    png = io.BytesIO()
    write_png(image, png, png_text(facts, reason, config))
    sidecar = sidecar_text(config, facts, reason)
    key = data_key(job["data"])
    state = None if job.get("state") else to_bytes(wrapped(engine.state_dict(), sidecar, reason, key))  # else written
    return {"png": png.getvalue(), "sidecar": sidecar, "state": state, "record": {
        "seed": engine.seed, "epoch": engine.epoch, "epochs": engine.epochs,
        "sim": round(sum(sims) / len(sims), 4) if sims else None, "sims": [round(s, 4) for s in sims],
        "labels": [label for t in engine.targets for label in t.labels()], "runtime": round(engine.runtime, 3)}}


# ---------------------------------------------------------------- records

def read_record(root: Path, job: dict) -> dict | None:
    """The job's record, if it finished before with the same experiment data."""
    try:
        record = json.loads((root / f"{job['name']}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("key") == job_key(job) and (root / record["file"]).is_file() else None


def save_result(root: Path, job: dict, result: dict) -> dict:
    base = root / job["name"]
    base.parent.mkdir(parents=True, exist_ok=True)
    png, sidecar, record_path = (base.with_name(base.name + s) for s in (".png", ".yaml", ".json"))
    atomic_write(png, lambda f: f.write(result["png"]))
    atomic_write(sidecar, lambda f: f.write(result["sidecar"].encode("utf-8")))
    if result.get("state"):
        atomic_write(base.with_name(base.name + ".state"), lambda f: f.write(result["state"]))
    record = {"name": job["name"], **job.get("meta", {}), **result["record"],
              "file": png.relative_to(root).as_posix(), "key": job_key(job)}
    text = json.dumps(record, indent=1)
    atomic_write(record_path, lambda f: f.write(text.encode("utf-8")))
    return record


# ---------------------------------------------------------------- executors

class Inline:
    """Runs each group of jobs in this process when it is submitted."""
    capacity = 1

    def submit(self, fn, job) -> Future:
        future = Future()
        try:
            future.set_result(fn(job))
        except Exception as e:  # noqa: BLE001 - reported and retried by the caller
            future.set_exception(e)
        return future

    def shutdown(self) -> None:
        pass


class Local:
    """Worker processes (spawned) on this machine, one device each; a crashed process is replaced."""

    def __init__(self, workers: int, devices: list[str | None]):
        import multiprocessing
        self.workers, self.devices, self.capacity = workers, devices, workers
        self.context = multiprocessing.get_context("spawn")
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        queue = self.context.Queue()
        for i in range(self.workers):
            queue.put(self.devices[i % len(self.devices)])
        threads = 0 if self.devices[0] else max(1, usable_cores() // self.workers)
        return ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_init_worker,
                                   initargs=(queue, threads))

    def submit(self, fn, job) -> Future:
        try:
            return self.pool.submit(fn, job)
        except BrokenProcessPool:
            self.pool = self._pool()
            return self.pool.submit(fn, job)

    def shutdown(self) -> None:
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()


class Ray:
    """Ray tasks on an existing cluster (or a local Ray instance), one GPU per task where GPUs exist."""

    def __init__(self, address: str | None, workers: int | None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray, an optional extra: pip install 'clipig[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.task = ray.remote(num_gpus=1 if gpus else 0, max_retries=0)(render_group)
        self.capacity = workers or 1 << 30
        self.refs = []

    def submit(self, fn, jobs) -> Future:
        ref = self.task.remote(jobs)
        self.refs.append(ref)
        return ref.future()

    def shutdown(self) -> None:
        for ref in self.refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished already
                pass


def executor(args):
    if args.backend == "ray":
        return Ray(args.address, args.workers)
    import torch
    gpus = torch.cuda.device_count()
    workers = args.workers or max(gpus, 1)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return Inline()
    return Local(workers, [f"cuda:{i}" for i in range(gpus)] or [None])


# ---------------------------------------------------------------- the loop

class Progress:
    def __init__(self, total: int, resumed: int, quiet: bool):
        self.total, self.done, self.failed, self.quiet = total, resumed, 0, quiet
        self.resumed, self.started = resumed, time.monotonic()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        remaining = self.total - self.done - self.failed
        rendered = self.done - self.resumed
        eta = f", ETA {duration((time.monotonic() - self.started) / rendered * remaining)}" if rendered else ""
        print(f"[{self.done}/{self.total} done, {self.failed} failed, {remaining} remaining{eta}] {text}",
              file=sys.stderr, flush=True)


def run_jobs(root: Path, jobs: list[dict], args, what: str = "runs") -> tuple[dict, list[str]]:
    """Render the unfinished `jobs` into `root`; returns ({name: record} of all finished, [failed names])."""
    records = {job["name"]: r for job in jobs if (r := read_record(root, job)) is not None}
    todo = [job for job in jobs if job["name"] not in records]
    progress = Progress(len(jobs), len(records), args.quiet)
    if not todo:
        progress.line(f"all {len(jobs)} {what} finished before")
        return records, []
    progress.line(f"{len(records)} {what} finished before, rendering {len(todo)}" if records
                  else f"rendering {len(todo)} {what}")
    if args.backend != "ray":  # states are files on this machine; Ray's workers may not share them
        todo = [{**job, "state": str(root / f"{job['name']}.state"),
                 "from_state": job.get("from") and str(root / f"{job['from']}.state")} for job in todo]
    pool, attempts, failed, running = executor(args), {}, [], {}
    try:
        while todo or running:
            while todo and len(running) < pool.capacity:
                group = next_group(todo, getattr(args, "together", None))
                running[pool.submit(render_group, group)] = group
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                group = running.pop(future)
                try:
                    results = future.result()
                except Exception as e:  # noqa: BLE001 - the process of the group failed: each job failed
                    results = [e] * len(group)
                for job, result in zip(group, results):
                    _finish(root, job, result, records, attempts, todo, failed, progress)
    finally:
        pool.shutdown()
    return records, failed


def next_group(todo: list[dict], together: int | None) -> list[dict]:
    """The first job of `todo` and the next ones that may share its CLIP pass (the same models, device,
    precision and passes), up to `--together` (clipig.run.together.group_size); taken out of `todo`."""
    from ..config.schema import validate
    from ..run.together import group_size

    def kind(job):
        return json.dumps([job["data"].get(k) for k in ("model", "device", "precision", "compile",
                                                         "views_per_pass")], sort_keys=True, default=str)
    first = todo.pop(0)
    size = group_size(validate(first["data"]), together, _DEVICE)
    group = [first] + [job for job in todo if kind(job) == kind(first)][:size - 1]
    for job in group[1:]:
        todo.remove(job)
    return group


def _finish(root: Path, job: dict, result, records: dict, attempts: dict, todo: list, failed: list,
            progress: Progress) -> None:
    """Save a job's result, or retry it once, or count it failed."""
    try:
        if isinstance(result, BaseException):
            raise result
        record = save_result(root, job, result)
    except Exception as e:  # noqa: BLE001 - one failed run never stops the others
        attempts[job["name"]] = tries = attempts.get(job["name"], 0) + 1
        error = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        if tries <= RETRIES:
            todo.append(job)
            progress.line(f"{job['name']} failed ({error}); retrying")
        else:
            failed.append(job["name"])
            progress.failed += 1
            progress.line(f"{job['name']} failed again ({error}); giving up")
        return
    records[job["name"]] = record
    progress.done += 1
    progress.line(f"{job['name']}  sim {record['sim']:.2f}  ({duration(record['runtime'])})"
                  if record.get("sim") is not None else job["name"])
