"""`clipig bench`: run the reference configurations (benchmarks/*.yaml) and report ratios that hold on
a noisy machine, because each is measured against something else measured in the same process:

1. critic efficiency   counted floating-point work of the CLIP forward+backward per second / GEMM peak
2. pipeline overhead   share of the epoch spent outside the CLIP forward+backward
3. resolution scaling  epoch time of hires-1024 / the same targets at 224²
4. memory              peak resident memory of a fresh process at batch 10 (VmHWM; ru_maxrss where
                       /proc is missing)
5. parameterization    share of the hires-1024 epoch that `fft` and `pyramid` take: the image's forward and
                       backward and the post-processing round trip, timed alone next to the run
8. bf16 CLIP pass      batch 10 in bfloat16 per second / the bfloat16 GEMM peak
9. floor               curly-spoon's epoch / the best-precision floor (its CLIP pass's counted work at the
                       larger of the float32 and bfloat16 GEMM peaks); each row also against the fp32 floor
10. runs together      ranking throughput of animal-method1 (20 epochs a run): runs together / one at a time

The CLIP forward and backward are timed by wrapping the critic (forward around `encode_image`, backward
between gradient hooks on its output and its input); the engine is not touched.

    python -m clipig.bench [--quick] [--model random:ViT-B/32] [--epochs N] [--threads N] [NAME ...]

`--quality` runs the referee's quality benchmark instead (clipig/mini/quality.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..run import threads

GOALS = {"efficiency": 0.80, "overhead": 0.10, "overhead_bf16": 0.12, "scaling": 1.3, "memory": 2 * 2**30,
         "parameterization": 0.10, "ensemble": 1.05, "large": 16 * 2**30,  # large: fits 24 GiB with room to spare
         "bf16_amx": 0.40, "bf16_avx512": 0.70,  # the bf16 CLIP pass at batch 10 / the bf16 peak, per CPU kind
         "floor": 4.0, "together": 1.2}
DEFAULT_MODEL = "random:ViT-B/32"
REFERENCE = ("curly-spoon-noise", "curly-spoon", "curly-spoons-mul", "lovecraft", "animal-method1",
             "animal-method2", "hires-1024")
SCALING = ("hires-1024", 224)  # (config, resolution of the comparison run)
PARAMETERIZED = ("hires-1024", ("fft", "pyramid"))  # (config, parameterizations it also runs with)
MEMORY = ("animal-method1", 10)  # (config, batch size) of the memory probe
ENSEMBLE = "animal-method1"  # also run as an ensemble of the model and a partner of the same architecture
LARGE = ("hires-1024", 200)  # a batch of many views at 1024², split into passes by views_per_pass: 0 (automatic)
FLOOR = "curly-spoon"  # its epoch against the best-precision floor of its CLIP pass
RANKING = ("animal-method1", 20)  # examples/animal-method-1.yaml; epochs of each ranking run
BENCH_DIR = Path(__file__).resolve().parent / "configs"


# --- measuring ------------------------------------------------------------------------------------------

def gemm_rate(size: int = 2048, repeats: int = 8, dtype=None) -> float:
    """Best matrix-multiply rate (FLOP/s) of torch.mm on square matrices of `size` (float32, or `dtype`)."""
    import torch
    dtype = dtype or torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best


def onednn_rate(size: int = 2048, repeats: int = 4) -> float | None:
    """Best float32 rate of oneDNN's matrix multiply (mkldnn_linear), for comparison with torch.mm (MKL)."""
    import torch
    try:
        a, b = torch.randn(size, size).to_mkldnn(), torch.randn(size, size).to_mkldnn()
        torch._C._nn.mkldnn_linear(a, b)
    except Exception:  # noqa: BLE001 - not every build has it
        return None
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch._C._nn.mkldnn_linear(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best


class Peak:
    """The machine's float32 and bfloat16 GEMM peaks: the best of samples taken all through the run (next to
    every CLIP measurement), so a busy spell of the machine does not lower them and a quiet one is not missed.
    `best` is the best-precision floor's rate: the larger of the two."""

    def __init__(self, size: int = 2048):
        self.size, self.fp32, self.bf16, self.samples = size, 0.0, 0.0, 0

    def sample(self, repeats: int = 2) -> float:
        """Sample both peaks. Without native bfloat16 (no AMX or AVX-512 BF16) torch emulates it about a
        hundred times slower than float32 (a 2048² product: 20 s on AVX2): there it is measured once, at 512²."""
        import torch

        from ..critic.precision import native_bf16
        self.fp32 = max(self.fp32, gemm_rate(self.size, repeats))
        if native_bf16():
            self.bf16 = max(self.bf16, gemm_rate(self.size, repeats, torch.bfloat16))
        elif not self.bf16:
            self.bf16 = gemm_rate(512, 1, torch.bfloat16)
        self.samples += repeats
        return self.fp32

    @property
    def best(self) -> float:
        return max(self.fp32, self.bf16)

    def of(self, precision: str) -> float:
        """The peak of the arithmetic a CLIP pass ran in."""
        return self.bf16 if precision == "bf16" else self.fp32


PEAK = Peak()


class TimedCritic:
    """Wraps a Critic: everything passes through; `encode_image` calls with gradients are timed (forward
    around the call, backward from the gradient arriving at the features to the gradient leaving for the
    input batch) into `log`, which the members of an ensemble share. The views are brought to the input size
    before the clock starts, as the engine did before the resize moved into the critic."""

    def __init__(self, critic, log: list):
        self._critic, self.log = critic, log

    def __getattr__(self, name):
        return getattr(self._critic, name)

    def encode_image(self, images, compiled: bool = False):
        from ..critic.views import seen
        return self.encode_seen(seen(images, self._critic.input_size), compiled)

    def encode_seen(self, images, compiled: bool = False, parts=None):
        import torch
        if not (torch.is_grad_enabled() and images.requires_grad):
            return self._critic.encode_seen(images, compiled, parts)
        record = {"critic": self._critic, "shape": tuple(images.shape), "dtype": torch.get_autocast_dtype("cpu")
                  if torch.is_autocast_enabled("cpu") else None}
        start = time.perf_counter()
        features = self._critic.encode_seen(images, compiled, parts)
        record["forward"] = time.perf_counter() - start
        if features.requires_grad:
            features.register_hook(lambda grad: record.__setitem__("backward_start", time.perf_counter()))
            images.register_hook(lambda grad: record.__setitem__("backward_end", time.perf_counter()))
        self.log.append(record)
        return features


def timed(ensemble) -> tuple:
    """The ensemble with every member timed, and the log their calls go into."""
    from ..critic.critic import Ensemble
    log: list[dict] = []
    return Ensemble([TimedCritic(c, log) for c in ensemble.critics], ensemble.weights), log


def take(log: list) -> tuple[float, list[dict]]:
    """CLIP seconds (forward + backward) of the calls in `log` since the last take, and those calls."""
    calls = log[:]
    log.clear()
    total = 0.0
    for c in calls:
        total += c["forward"]
        if "backward_end" in c and "backward_start" in c:
            total += c["backward_end"] - c["backward_start"]
    return total, calls


class EpochClock:
    """Listener: wall time of each epoch (event to event, so every listener's work is inside) and the CLIP
    time of the same epoch (from the log of a `timed` critic)."""

    def __init__(self):
        self.log: list[dict] = []
        self.last = 0.0
        self.epochs: list[tuple[float, float]] = []  # (epoch seconds, CLIP seconds)
        self.calls: list[dict] = []  # the CLIP calls of the last epoch that had some
        self.precision = "fp32"

    def __call__(self, event) -> None:
        now = time.perf_counter()
        if event.kind == "start":
            take(self.log)
        elif event.kind == "epoch":
            clip, calls = take(self.log)
            self.epochs.append((now - self.last, clip))
            self.calls = calls or self.calls
            if calls and calls[0]["dtype"] is not None:
                self.precision = {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(calls[0]["dtype"]),
                                                                                         str(calls[0]["dtype"]))
        self.last = time.perf_counter() if event.kind == "start" else now


def clip_pass(critic, shape: tuple, autocast, repeats: int) -> tuple[float, float]:
    """(counted FLOPs, best seconds) of one CLIP forward+backward of random images of `shape` alone."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    images = torch.rand(*shape, requires_grad=True)

    def once():
        with autocast():
            features = critic.encode_image(images).float()
        features.square().sum().backward()
        images.grad = None

    with FlopCounterMode(display=False) as counter:
        once()
    best = float("inf")
    for _ in range(repeats):
        PEAK.sample(1)
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return float(counter.get_total_flops()), best


def canvas_pass(canvas, repeats: int) -> float:
    """Best seconds of what the parameterization adds to an epoch: the image's forward and backward, and the
    post-processing round trip (the unclamped image out, set back in)."""
    import torch
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        image = canvas.image()
        image.backward(torch.ones_like(image))
        with torch.no_grad():
            canvas.set_image(canvas.unclamped())
        best = min(best, time.perf_counter() - start)
    canvas.zero_grad(set_to_none=True)
    return best


def load_config(path: Path, args, overrides=()):
    from ..config.loader import load
    return load([path], overrides=[f"model={json.dumps(args.model)}", f"device={args.device}",
                                   f"epochs={args.warmup + args.epochs}", "seed=1", *args.overrides,
                                   *overrides])


def make_engine(config, outdir: Path, listeners=()):
    """The engine as `clipig render` opens it: with its progress/statistics listener (into a buffer) and the
    output writer (snapshots into a temporary folder)."""
    from ..files.output import OutputWriter
    from ..run.engine import open_run
    extra = []
    with contextlib.suppress(Exception):
        from ..files.runner import Progress
        extra.append(Progress(config.verbose(), stream=io.StringIO()))
    with contextlib.suppress(Exception):
        extra.append(OutputWriter(config, outdir / "bench.png"))
    return open_run(config, [*extra, *listeners])


@dataclass
class Row:
    name: str
    config: str = ""  # the configuration the row runs (its name without the variant)
    resolution: str = ""
    precision: str = "fp32"  # of the CLIP pass, as the engine's autocast ran it
    batch: int = 0
    epoch: float = 0.0  # median seconds per epoch
    fastest: float = 0.0  # seconds of the fastest epoch
    clip: float = 0.0  # median seconds of CLIP forward+backward per epoch (in the run)
    overhead: float = 0.0  # median share of the epoch outside CLIP
    flops: float = 0.0  # counted FLOPs of one CLIP forward+backward of the epoch's batch
    alone: float = 0.0  # best seconds of the same CLIP forward+backward alone
    canvas: float = 0.0  # best seconds of the parameterization's own work per epoch, alone (`canvas_pass`)
    error: str = ""
    overrides: tuple = ()
    epochs: list = field(default_factory=list)

    def efficiency(self, peak: float) -> float:
        return self.flops / self.clip / peak if self.clip and peak else 0.0

    def efficiency_alone(self, peak: float) -> float:
        return self.flops / self.alone / peak if self.alone and peak else 0.0

    def floors(self, peak: float) -> float:
        """The epoch in units of the floor: the time of its CLIP pass's counted work at `peak`."""
        return self.epoch * peak / self.flops if self.flops else 0.0


def run_config(name: str, path: Path, args, overrides=()) -> Row:
    from ..config.errors import ConfigError
    row = Row(name, path.stem, overrides=tuple(overrides))
    try:
        config = load_config(path, args, overrides)
    except (ConfigError, Exception) as e:  # noqa: BLE001 - a broken config is a row, not a crash
        row.error = f"{type(e).__name__}: {e}".splitlines()[0][:120]
        return row
    clock = EpochClock()
    with tempfile.TemporaryDirectory(prefix="clipig-bench-") as tmp:
        try:
            engine = make_engine(config, Path(tmp), [clock])
            engine.critic, clock.log = timed(engine.critic)  # the stopwatch goes between the engine and CLIP
            engine.run()
        except Exception as e:  # noqa: BLE001
            row.error = f"{type(e).__name__}: {e}".splitlines()[0][:120]
            return row
    measured = clock.epochs[args.warmup:] or clock.epochs
    row.epochs = measured
    row.resolution = "x".join(str(v) for v in engine.canvas.resolution)
    row.epoch = statistics.median(e for e, _ in measured)
    row.fastest = min(e for e, _ in measured)
    row.clip = statistics.median(c for _, c in measured)
    row.overhead = statistics.median(1.0 - c / e for e, c in measured if e > 0)
    row.precision = clock.precision
    row.canvas = canvas_pass(engine.canvas, args.repeats)
    views: dict = {}  # critic -> (views of the epoch, shape of one call)
    for call in clock.calls:
        count, _ = views.get(call["critic"], (0, None))
        views[call["critic"]] = (count + call["shape"][0], call["shape"])
    for critic, (count, shape) in views.items():  # an ensemble: the sum of its members' passes alone
        flops, alone = clip_pass(critic, (count, *shape[1:]), getattr(engine, "autocast", contextlib.nullcontext),
                                 args.repeats)
        row.batch, row.flops, row.alone = max(row.batch, count), row.flops + flops, row.alone + alone
    return row


def ensemble_partner(model: str) -> str | None:
    """A model of the same architecture as `model` with other (random) weights, for the ensemble row: it costs
    the same CLIP pass and needs no download. None where the name tells no architecture (a checkpoint file
    without one, a shipped mini)."""
    from ..critic.names import parse
    name = parse(model)
    if name.kind == "random":
        return f"{model.strip().removesuffix(f':{name.seed}')}:{name.seed + 1}"
    if name.kind == "openai":
        return f"random:{model.strip()}:1"
    if name.kind == "pretrained" or (name.kind == "file" and name.arch):
        return f"random:{name.arch}:1"
    return None


def efficiency_sweep(critic, batches, repeats: int, autocast=None) -> list[tuple[int, float, float]]:
    """(batch, FLOPs, best seconds) of the CLIP forward+backward alone at each batch size."""
    size = critic.input_size
    autocast = autocast or contextlib.nullcontext
    return [(b, *clip_pass(critic, (b, 3, size, size), autocast, repeats)) for b in batches]


def ranking_throughput(args, epochs: int, repeats: int) -> tuple[int, int, int, float, float]:
    """(runs, epochs, repeats, seconds one at a time, seconds together) of a group of `clipig rank`-like runs of RANKING (other
    seeds, `epochs` epochs, no files) as `--together` groups them automatically; best of `repeats`, the two
    ways taken in turns."""
    from ..run.engine import open_run
    from ..run.together import Together, group_size
    path = find_configs([RANKING[0]], args)[0][1]
    configs = [load_config(path, args, [f"epochs={epochs}", f"seed={seed}", "verbose=0"]) for seed in range(64)]
    configs = configs[:max(2, group_size(configs[0], None, args.device))]
    open_run(configs[0], device=args.device).step()  # warm-up: the critic loaded, its bf16 weights cast
    alone = together = float("inf")
    for _ in range(repeats):
        PEAK.sample(1)
        start = time.perf_counter()
        for config in configs:
            open_run(config, device=args.device).run()
        alone = min(alone, time.perf_counter() - start)
        start = time.perf_counter()
        Together([open_run(config, device=args.device) for config in configs]).run()
        together = min(together, time.perf_counter() - start)
    return len(configs), epochs, repeats, alone, together


def memory_probe(args, probe=MEMORY, epochs: int = 2) -> int | None:
    """Peak resident bytes of a fresh process that runs the configuration and batch size of `probe` for a few
    epochs (started before this process grows, and read as VmHWM, so the parent's size cannot leak into the
    figure)."""
    path = find_configs([probe[0]], args)[0][1]
    command = [sys.executable, "-m", "clipig.bench", "--memory-probe", str(path), "--model", args.model,
               "--device", args.device, "--epochs", str(epochs), "--warmup", "1",
               "--set", f"targets[0].batch_size={probe[1]}", *sum((["--set", o] for o in args.overrides), [])]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    for line in reversed(result.stdout.splitlines()):
        with contextlib.suppress(ValueError):
            return int(json.loads(line)["hwm"])
    print(f"memory probe failed: {result.stderr.strip()[-500:]}", file=sys.stderr)
    return None


def _memory_child(args) -> int:
    import resource

    config = load_config(Path(args.memory_probe), args)
    with tempfile.TemporaryDirectory(prefix="clipig-bench-") as tmp:
        make_engine(config, Path(tmp)).run()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"maxrss": maxrss, "hwm": peak_rss() or maxrss}))
    return 0


def peak_rss() -> int | None:
    """Peak resident bytes of this process image (VmHWM). Unlike ru_maxrss it does not inherit the parent's
    peak: Linux carries the old address space's high-water mark over fork + exec into ru_maxrss."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def profile_config(name: str, path: Path, args, overrides=(), epochs: int = 3, top: int = 18) -> str:
    """Where the time of a few epochs goes: torch.profiler operators and a cProfile of the Python side."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity, profile
    config = load_config(path, args, [*overrides, f"epochs={1 + 2 * epochs}"])
    out = []
    with tempfile.TemporaryDirectory(prefix="clipig-bench-") as tmp:
        engine = make_engine(config, Path(tmp))
        engine.step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(epochs):
                engine.step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=44)
        out.append(f"### {name}: operators (torch.profiler, {epochs} epochs, self CPU time)\n\n```\n"
                   + "\n".join(line[:150] for line in table.splitlines()) + "\n```")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(epochs):
            engine.step()
        profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats("cumulative")
    stats.print_stats(r"engine|targets|transforms|constraints|critic|optim|_tensor|functional", top)
    text = "\n".join(line for line in stream.getvalue().splitlines() if line.strip())
    out.append(f"### {name}: Python functions (cProfile, {epochs} epochs, cumulative)\n\n```\n{text}\n```")
    return "\n\n".join(out)


# --- reporting ------------------------------------------------------------------------------------------

def machine() -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("torchvision", "open_clip"):
        with contextlib.suppress(Exception):
            versions[module] = __import__(module).__version__
    flags = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text)
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "flags": flags,
            "versions": versions, "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes")}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def verdict(value, goal, smaller_is_better: bool) -> str:
    if value is None:
        return "n/a"
    met = value <= goal if smaller_is_better else value >= goal
    return "met" if met else "NOT met"


def report(info: dict, args, peak: float, rows: list[Row], sweep, scaling, memory, ensemble=None,
           large=None, ranking=None) -> str:
    """The tables and figures; `peak` the float32 GEMM peak, `PEAK.best` the best-precision one (the larger of
    the float32 and bfloat16 peaks); `ranking`: what `ranking_throughput` returns."""
    from ..critic.precision import native_bf16
    best = PEAK.best
    out = [f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['threads']}"
           + (f" ({info['flags']})" if info["flags"] else ""),
           "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
           f"date: {info['date']}",
           f"mode: {'quick' if args.quick else 'full'}, model {args.model}, {args.warmup} warm-up + {args.epochs} "
           f"measured epochs per configuration, medians",
           f"GEMM peaks (torch.mm {PEAK.size}², best of {PEAK.samples} spread over the run): float32 "
           f"{peak / 1e9:.1f} GFLOP/s, bfloat16 {PEAK.bf16 / 1e9:.1f} GFLOP/s"
           f"{'' if native_bf16() else ' (emulated: no AMX or AVX-512 BF16; one product of 512²)'}"
           f"; the best-precision floor counts "
           f"{best / 1e9:.1f} GFLOP/s"
           + (f"; oneDNN float32 matmul for comparison: {info['onednn'] / 1e9:.1f} GFLOP/s" if info.get("onednn") else ""),
           f"OpenMP wait policy: {os.environ.get('OMP_WAIT_POLICY', 'default')}; other processes kept "
           + (f"{info['other_load']:.2f} of {info['cores']} cores busy during the run"
              if info.get("other_load") is not None else "an unknown share of the cores busy"), ""]
    body = []
    for r in rows:
        if r.error:
            body.append([r.name, *["-"] * 13, "error: " + r.error])
            continue
        goal = overhead_goal(r.precision)
        body.append([r.name, r.resolution, str(r.batch), r.precision, f"{r.epoch:.3f}", f"{r.clip:.3f}",
                     f"{r.overhead * 100:.1f}%", f"{r.canvas / r.epoch * 100:.1f}%", f"{r.flops / 1e9:.1f}",
                     f"{r.efficiency(peak):.2f}", f"{r.efficiency(best):.2f}", f"{r.efficiency_alone(best):.2f}",
                     f"{r.floors(peak):.2f}", f"{r.floors(best):.2f}",
                     "" if r.overhead <= goal else f"overhead > {goal * 100:.0f}%"])
    out.append(table(["configuration", "pixels", "views", "CLIP in", "epoch s", "CLIP s", "outside CLIP",
                      "image", "GFLOP", "eff. fp32 peak", "eff. best peak", "eff. alone, best", "× fp32 floor",
                      "× best floor", "note"], body))
    if sweep:
        out += ["", "CLIP forward+backward alone (random images at the CLIP input size), against the float32, "
                "bfloat16 and best peaks:", ""]
        out.append(table(["views", "precision", "threads", "GFLOP", "seconds", "GFLOP/s", "of fp32 peak",
                          "of bf16 peak", "of best peak"],
                         [[str(b), p, str(t), f"{f / 1e9:.1f}", f"{s:.3f}", f"{f / s / 1e9:.1f}", f"{f / s / peak:.2f}",
                           f"{f / s / PEAK.bf16:.2f}" if PEAK.bf16 else "n/a", f"{f / s / best:.2f}"]
                          for b, p, t, f, s in sweep]))
    if ranking:
        runs, epochs, repeats, alone, together = ranking
        out += ["", f"Ranking throughput ({RANKING[0]}, {epochs} epochs a run, {runs} runs, best of {repeats}, the "
                "two ways in turns):", ""]
        out.append(table(["runs", "seconds", "images per hour"],
                         [["one at a time", f"{alone:.1f}", f"{3600 * runs / alone:.0f}"],
                          [f"{runs} together", f"{together:.1f}", f"{3600 * runs / together:.0f}"]]))
    good = [r for r in rows if not r.error]
    eff_rows = [r for r in good if r.batch >= 10 and r.precision == "fp32"]
    eff = max([f / s / peak for b, p, t, f, s in sweep if b >= 10 and p == "fp32"]
              + [r.efficiency(peak) for r in eff_rows], default=None)
    worst = max(good, key=lambda r: r.overhead / overhead_goal(r.precision), default=None)
    parameterized = [r for r in good if r.name.startswith(PARAMETERIZED[0] + " ")]
    costly = max(parameterized, key=lambda r: r.canvas / r.epoch, default=None)
    cost = costly and costly.canvas / costly.epoch
    figures = [
        ["1. critic efficiency (batch >= 10, fp32)", "n/a" if eff is None else f"{eff:.2f}",
         f">= {GOALS['efficiency']:.2f}", verdict(eff, GOALS["efficiency"], False)],
        ["2. pipeline overhead (worst configuration against its goal)",
         "n/a" if worst is None else f"{worst.overhead * 100:.1f}% ({worst.name}, {worst.precision})",
         f"<= {GOALS['overhead'] * 100:.0f}% fp32, {GOALS['overhead_bf16'] * 100:.0f}% bf16",
         verdict(worst and worst.overhead, worst and overhead_goal(worst.precision), True)],
        [f"3. resolution scaling ({SCALING[0]} / {SCALING[1]}², fastest epochs)", "n/a" if scaling is None else f"{scaling:.2f}",
         f"<= {GOALS['scaling']}", verdict(scaling, GOALS["scaling"], True)],
        [f"4. peak memory ({MEMORY[0]}, batch {MEMORY[1]})",
         "n/a" if memory is None else f"{memory / 2**30:.2f} GiB", f"<= {GOALS['memory'] / 2**30:.0f} GiB",
         verdict(memory, GOALS["memory"], True)],
        [f"5. parameterization share of the epoch ({PARAMETERIZED[0]}, worst of {', '.join(PARAMETERIZED[1])})",
         "n/a" if costly is None else f"{cost * 100:.1f}% ({costly.name.split()[-1]})",
         f"<= {GOALS['parameterization'] * 100:.0f}%", verdict(cost, GOALS["parameterization"], True)],
        [f"6. ensemble of two ({ENSEMBLE}: epoch / (one model's epoch + its CLIP pass))",
         "n/a" if ensemble is None else f"{ensemble:.2f}", f"<= {GOALS['ensemble']:.2f}",
         verdict(ensemble, GOALS["ensemble"], True)],
    ]
    if not args.quick:  # the large probe takes minutes on a small machine
        figures.append([f"7. peak memory ({LARGE[0]}, {LARGE[1]} views, views_per_pass automatic)",
                        "n/a" if large is None else f"{large / 2**30:.2f} GiB", f"<= {GOALS['large'] / 2**30:.0f} GiB",
                        verdict(large, GOALS["large"], True)])
    bf16 = [f / s / PEAK.bf16 for b, p, t, f, s in sweep if b == 10 and p == "bf16" and PEAK.bf16]
    bf16_goal = GOALS["bf16_amx"] if "amx_bf16" in info["flags"] else GOALS["bf16_avx512"] \
        if "avx512_bf16" in info["flags"] else None
    figures.append(["8. CLIP pass in bf16 at batch 10 / the bf16 peak", f"{bf16[0]:.2f}" if bf16 else "n/a",
                    "none (no native bf16)" if bf16_goal is None else f">= {bf16_goal:.2f}",
                    "" if bf16_goal is None else verdict(bf16[0] if bf16 else None, bf16_goal, False)])
    spoon = [r for r in good if r.name == FLOOR]
    floors = spoon[0].floors(best) if spoon else None
    figures.append([f"9. {FLOOR} epoch / the best-precision floor ({spoon[0].precision if spoon else '-'})",
                    "n/a" if floors is None else f"{floors:.2f}×", f"<= {GOALS['floor']:.0f}×",
                    verdict(floors, GOALS["floor"], True)])
    gain = ranking and ranking[-2] / ranking[-1]
    figures.append([f"10. ranking throughput ({RANKING[0]}), runs together / one at a time",
                    "n/a" if not gain else f"{gain:.2f}×", f">= {GOALS['together']}×",
                    verdict(gain or None, GOALS["together"], False)])
    out += ["", table(["figure", "measured", "goal", ""], figures)]
    return "\n".join(out)


def overhead_goal(precision: str) -> float:
    """The pipeline overhead's goal: a faster CLIP pass (bf16) leaves the rest a larger share."""
    return GOALS["overhead_bf16"] if precision == "bf16" else GOALS["overhead"]


# --- command line ---------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipig bench", description=(
        "Run the reference configurations for a fixed number of epochs and report CLIP efficiency (vs. the "
        "measured GEMM peak), the share of the epoch outside CLIP, resolution scaling, peak memory and the "
        "share of the epoch the parameterizations take."))
    p.add_argument("configs", nargs="*", metavar="NAME|FILE.yaml",
                   help=f"configurations (default: all of {BENCH_DIR.name}/*.yaml: {', '.join(REFERENCE)})")
    p.add_argument("--quality", action="store_true", help=(
        "instead: the quality benchmark, pictures of `mini` judged by `mini-referee` "
        "(`clipig bench --quality --help`)"))
    p.add_argument("--quick", action="store_true", help="few epochs, no profile: a smoke test (< 3 min)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"CLIP model (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--epochs", type=int, help="measured epochs per configuration (default: 2 quick, 8 full)")
    p.add_argument("--warmup", type=int, help="epochs before measuring (default: 1 quick, 2 full)")
    p.add_argument("--repeats", type=int, help="repeats of the CLIP pass alone, best counts (2 quick, 4 full)")
    threads.add_option(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a parameter in every configuration, e.g. --set precision=bf16")
    p.add_argument("--profile", type=int, metavar="N",
                   help="profile the N configurations with the largest overhead (default: 0 quick, 2 full)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory probe")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the batch/precision sweep")
    p.add_argument("--no-ranking", dest="ranking", action="store_false",
                   help="skip the ranking throughput (runs together against one at a time)")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    return p


def find_configs(names: list[str], args) -> list[tuple[str, Path]]:
    found = []
    for name in names or REFERENCE:
        path = Path(name)
        if not path.suffix:
            path = BENCH_DIR / f"{name}.yaml"
        if not path.is_file():
            raise SystemExit(f"error: benchmark configuration not found: {path}")
        found.append((path.stem, path))
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--quality" in argv:  # the referee's quality benchmark has its own options (clipig.mini.quality)
        from .quality import main as quality
        return quality([a for a in argv if a != "--quality"], table, machine())
    args = parser().parse_args(argv)
    quick = args.quick
    args.epochs = args.epochs if args.epochs is not None else (2 if quick else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.repeats = args.repeats or (2 if quick else 4)
    args.profile = args.profile if args.profile is not None else (0 if quick else 2)
    import torch
    threads.configure(args.threads)
    if args.memory_probe:
        return _memory_child(args)
    from ..critic.models import load_critic
    configs = find_configs(args.configs, args)
    partner = ensemble_partner(args.model)
    load = threads.OtherLoad()
    info = machine()
    print(f"clipig bench: {len(configs)} configurations, model {args.model}, {info['cpu']}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)
    memory = large = None
    if args.memory:
        print("  memory probe ...", file=sys.stderr, flush=True)
        memory = memory_probe(args)
        if not quick:
            print(f"  memory probe: {LARGE[1]} views of {LARGE[0]} ...", file=sys.stderr, flush=True)
            large = memory_probe(args, LARGE, epochs=1)
    PEAK.sample(8)
    critic = load_critic(args.model, args.device)
    rows = []
    for name, path in configs:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        PEAK.sample()
        rows.append(run_config(name, path, args))
        if name == SCALING[0]:
            print(f"  {name} at {SCALING[1]}² ...", file=sys.stderr, flush=True)
            rows.append(run_config(f"{name}@{SCALING[1]}", path, args, [f"resolution={SCALING[1]}"]))
        if name == PARAMETERIZED[0]:
            for kind in PARAMETERIZED[1]:
                print(f"  {name} with {kind} ...", file=sys.stderr, flush=True)
                rows.append(run_config(f"{name} {kind}", path, args, [f"parameterization={kind}"]))
        if name == ENSEMBLE and partner:
            print(f"  {name} with the ensemble [{args.model}, {partner}] ...", file=sys.stderr, flush=True)
            rows.append(run_config(f"{name}+{partner}", path, args, [f"model={json.dumps([args.model, partner])}"]))
    sweep = []
    if args.sweep:
        print("  CLIP pass alone ...", file=sys.stderr, flush=True)
        count = torch.get_num_threads()
        for b, f, s in efficiency_sweep(critic, [10] if quick else [1, 5, 10, 20], args.repeats):
            sweep.append((b, "fp32", count, f, s))
        bf16 = lambda: torch.autocast(critic.device.type, dtype=torch.bfloat16)  # noqa: E731
        for b, f, s in efficiency_sweep(critic, [10] if quick else [5, 10, 20, 40], args.repeats, bf16):
            sweep.append((b, "bf16", count, f, s))
        if not quick:
            if count > 1:
                torch.set_num_threads(1)
                try:
                    for b, f, s in efficiency_sweep(critic, [10], args.repeats):
                        sweep.append((b, "fp32", 1, f, s))
                finally:
                    torch.set_num_threads(count)
    ranking = None
    if args.ranking:
        print(f"  ranking throughput ({RANKING[0]}) ...", file=sys.stderr, flush=True)
        ranking = ranking_throughput(args, 3 if quick else RANKING[1], 1 if quick else 2)
    peak = PEAK.sample(4)
    info["onednn"] = onednn_rate()
    info["other_load"] = load.cores()
    by_name = {r.name: r for r in rows if not r.error}
    scaling = None
    high, low = by_name.get(SCALING[0]), by_name.get(f"{SCALING[0]}@{SCALING[1]}")
    if high and low:
        scaling = high.fastest / low.fastest  # the least disturbed epochs
    ensemble = None
    one, two = by_name.get(ENSEMBLE), by_name.get(f"{ENSEMBLE}+{partner}")
    if one and two:
        ensemble = two.epoch / (one.epoch + one.clip)  # two CLIP passes, the rest of the epoch once
    print(report(info, args, peak, rows, sweep, scaling, memory, ensemble, large, ranking))
    if args.profile:
        worst = sorted((r for r in rows if not r.error), key=lambda r: -r.overhead)[:args.profile]
        paths = dict(configs)
        for r in worst:
            print(f"  profiling {r.name} ...", file=sys.stderr, flush=True)
            try:
                print("\n" + profile_config(r.name, paths[r.config], args, r.overrides))
            except Exception as e:  # noqa: BLE001 - the profile steps the engine by hand; report, go on
                print(f"\n(profile of {r.name} failed: {type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
