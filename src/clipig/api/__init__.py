"""CLIPig from Python: `render` an experiment to an image, or open a `Run` and go on step by step; `rate` a
picture by its CLIP similarity to texts. The experiment and its settings mean what they mean on the command
line, errors are the CLI's `ConfigError`, and nothing is written unless `.save()` is called (docs/python.md).

    import clipig
    run = clipig.render("examples/first-image.yaml", epochs=100)
    run.image                 # a PIL image: the pixels of the PNG the CLI would write
    run.save("out/")          # out/first-image.png, .yaml and .state, as the CLI writes them
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from ..config.loader import SHORTHANDS

SETTINGS = (*SHORTHANDS, "quiet", "threads", "set", "on_epoch")  # the CLI's shorthands and options, a listener


def render(experiment, **settings) -> "Run":
    """Run `experiment` to its last epoch and return the finished `Run` (`.image`, `.tensor`, `.statistics`,
    `.config`, `.save()`). `experiment`: a YAML file, YAML text, a dict or a list of them, merged in order as
    the CLI merges files; `settings`: see `Run`."""
    run = Run(experiment, **settings)
    run.run()
    return run


class Run:
    """An opened run of an experiment (the model is loaded, the start picture made), trained by `run()`.

    settings: the command line's shorthands (`epochs=50`, `model="mini"`, `seed=1`, `resolution=64`,
    `device="cpu"`, `learnrate=`, `optimizer=`, `output=`, `verbose=` 0-2, `quiet=True`, `threads=`),
    `set={"targets[0].batch_size": 4}` (the CLI's `--set`) and `on_epoch=callable`, called with the `Event` of
    every epoch (`event.epoch`, `event.loss`, `event.image()`, `event.stop()`, ...).
    """

    def __init__(self, experiment, **settings):
        self._open(listed(experiment), settings)

    @classmethod
    def resume(cls, path, **settings) -> "Run":
        """Go on from a run's state file (`NAME.state`, or the `NAME.png` it lies beside) exactly where it
        stopped, as `clipig resume` does; from a PNG that CLIPig wrote without its state, from the PNG's
        pixels at its epoch with its recorded configuration. `settings` apply over the recorded ones
        (`epochs=` extends a finished run)."""
        from ..config.loader import parse_yaml
        from ..files import statefile
        path = Path(path)
        file = path if path.suffix == statefile.SUFFIX else statefile.state_path(path)
        run = cls.__new__(cls)
        if file.is_file() or path.suffix == statefile.SUFFIX:
            state = statefile.load(file)
            run._open([parse_yaml(state["config"], str(file))], settings, state, str(path.with_suffix(".png")))
        else:
            from ..config.recorded import read as recorded
            from ..critic.images import load_image
            epoch = recorded(path)["run"].get("epoch", 0)
            run._open([path], settings, {"epoch": epoch, "image": load_image(str(path))})
        return run

    def _open(self, items: list, settings: dict, state: dict | None = None, name: str | None = None) -> None:
        """Open the engine of `items` (experiments) with `settings` applied, going on from `state`."""
        from ..config.errors import ConfigError
        from ..config.loader import apply_override
        from ..config.schema import validate
        from ..run import threads
        from ..run.engine import open_run
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(SETTINGS)}")
        data = read(items)
        for assignment in overrides(settings):
            apply_override(data, assignment)
        config = validate(data)
        if in_kernel():
            from . import notebook  # noqa: F401  (before the model loads: see notebook.py)
        threads.configure(settings.get("threads"))
        engine = open_run(config, [self._listen], state=state)
        files = [str(i) for i in items if isinstance(i, Path) or is_file_name(i)]
        self._items, self._settings, self._engine = items, settings, engine
        self._name = name or (files[-1] if files else None)  # names the image, as the CLI's last file does
        self._ran, self._until, self._progress = False, 0, None

    def _listen(self, event) -> None:
        if self._progress is not None:
            self._progress(event)
        if event.kind == "epoch":
            if self._settings.get("on_epoch") is not None:
                self._settings["on_epoch"](event)
            if event.epoch >= self._until:
                event.stop()

    def run(self, epochs: int | None = None) -> "Run":
        """Train `epochs` more epochs (default: to the end of the schedule), showing progress as `verbose`
        asks: in Jupyter the image as it emerges, a progress bar and the statistics at the end; elsewhere the
        CLI's progress bar and statistics. A run stopped by `stop()`, `on_epoch` or an interrupted kernel goes on
        exactly where it stopped."""
        from ..config.errors import ConfigError
        if self.epoch >= self.epochs:
            raise ConfigError(f"the run is at epoch {self.epoch} of {self.epochs}: nothing to do; "
                              "change(epochs=N) with N above it goes on")
        if self._ran:  # a finished engine does not start again: a fresh one goes on from its exact state
            from ..run.engine import open_run
            self._engine = open_run(self._engine.config, [self._listen], state=self._engine.state_dict())
        self._ran = True
        self._until = self.epochs if epochs is None else self.epoch + epochs
        self._progress = progress(self._engine.config.verbose())
        try:
            self._engine.run()
        finally:
            self._progress = None
        return self

    def change(self, experiment=None, **settings) -> "Run":
        """Go on with a changed experiment from the current pixels and epoch, as the live editor continues
        after an edit: `experiment` replaces the experiment (default: the same one, its files read again),
        `settings` apply over the settings so far (`change(set={"targets[0].transforms[0].noise": .3})`).
        The optimizer and the statistics start afresh; a change that is refused leaves the run as it was."""
        picture = {"epoch": self.epoch, "image": self._engine.image(unclamped=True)}
        merged = {**self._settings, **settings,
                  "set": {**(self._settings.get("set") or {}), **(settings.get("set") or {})}}
        if experiment is None:
            self._open(self._items, merged, picture, self._name)
        else:
            self._open(listed(experiment), merged, picture)
        return self

    def stop(self) -> None:
        """Stop training after the current epoch (from another thread or a callback)."""
        self._engine.stop()

    @property
    def epoch(self) -> int:
        """Epochs done in the schedule."""
        return self._engine.epoch

    @property
    def epochs(self) -> int:
        return self._engine.epochs

    @property
    def seed(self) -> int:
        return self._engine.seed

    @property
    def tensor(self):
        """The image as a [3, H, W] float tensor in [0, 1] on the CPU."""
        return self._engine.image()

    @property
    def image(self):
        """The image as a PIL image: the pixels of the PNG that `save` (and the CLI) writes."""
        from ..files.output import to_pil
        return to_pil(self._engine.image())

    @property
    def statistics(self) -> list[dict]:
        """Per target: its name, epochs, views, and per feature and constraint the weight, count, loss and
        similarity (mean, min, max); the CLI prints them as a table."""
        return self._engine.statistics()

    @property
    def config(self) -> dict:
        """The complete configuration, every default filled in and the seed set, as the sidecar file holds it."""
        import yaml

        from ..files.output import sidecar_text
        return yaml.safe_load(sidecar_text(self._engine.config, self._engine.facts()))

    def save(self, path: str | Path | None = None) -> Path:
        """Write the image as the CLI does: `path` is a folder ending in `/` (named after the experiment's last
        file) or a `.png` name (default: the `output` setting); a taken name is never overwritten (`x-1.png`,
        ...). Beside it go the sidecar `.yaml` and the `.state` that `Run.resume` and `clipig resume` go on
        from. Returns the PNG's path."""
        from ..files import statefile
        from ..files.output import output_path, png_text, reserve, save_png, sidecar_text, write_sidecar
        engine, config = self._engine, self._engine.config
        reason = "done" if engine.epoch >= engine.epochs else "stopped"
        facts = engine.facts()
        file = reserve(output_path(str(path) if path is not None else config.output(), self._name))
        save_png(engine.image(), file, png_text(facts, reason, config))
        text = sidecar_text(config, facts, reason)
        write_sidecar(file.with_suffix(".yaml"), text)
        statefile.save(statefile.state_path(file), statefile.wrapped(engine.state_dict(), text, reason))
        return file

    def __repr__(self) -> str:
        width, height = self._engine.canvas.resolution
        return f"<clipig.Run: epoch {self.epoch} of {self.epochs}, {width}x{height}, seed {self.seed}>"


def rate(image, texts, model: str = "ViT-B/32", device: str = "auto") -> dict[str, float]:
    """CLIP similarity (cosine * 100) of `image` to each of `texts`, as `clipig rate` gives it: `image` is a
    `Run` (its PNG's pixels), a PIL image, a [3, H, W] tensor in [0, 1] or a path or URL."""
    import torch

    from ..critic.models import load_critic
    texts = [texts] if isinstance(texts, str) else list(texts)
    critic = load_critic(model, device)
    if isinstance(image, Run):
        image = image.image
    if isinstance(image, (str, Path)):
        from ..critic.images import load_image
        image = load_image(str(image))
    elif not torch.is_tensor(image):
        from torchvision.transforms.functional import pil_to_tensor
        image = pil_to_tensor(image.convert("RGB")).float() / 255.0
    with torch.no_grad():
        similarity = critic.similarity(critic.encode_image(image[None].to(critic.device)), critic.encode_text(texts))
    return dict(zip(texts, similarity[0].tolist()))


def listed(experiment) -> list:
    return list(experiment) if isinstance(experiment, (list, tuple)) else [experiment]


def is_file_name(item) -> bool:
    """A string that names a file (one line ending in .yaml, .yml or .png), not YAML text."""
    return isinstance(item, str) and "\n" not in item and item.strip().lower().endswith((".yaml", ".yml", ".png"))


def read(items: list) -> dict:
    """Experiments (files, YAML texts, dicts) merged in order, as the CLI merges its files."""
    from ..config.loader import LocDict, merge, parse_yaml, read_yaml
    texts = sum(isinstance(i, str) and not is_file_name(i) for i in items)
    files = [str(i) for i in items if isinstance(i, Path) or is_file_name(i)]
    data, text = LocDict(loc=(files[0] if files else None, 1)), 0
    for item in items:
        if isinstance(item, dict):
            part = copy.deepcopy(item)  # merging and overrides change the data, never the caller's dict
        elif isinstance(item, Path) or is_file_name(item):
            part = read_yaml(item)
        elif isinstance(item, str):
            text += 1
            part = parse_yaml(item, "<config>" if texts == 1 else f"<text {text}>")
        else:
            from ..config.errors import ConfigError
            raise ConfigError(f"an experiment is a YAML file, YAML text or a dict, got {type(item).__name__}")
        merge(data, part)
    return data


def overrides(settings: dict) -> list[str]:
    """The settings as the CLI's overrides: `set` first, then the shorthands (they win), values as YAML."""
    result = [f"{path}={json.dumps(value)}" for path, value in (settings.get("set") or {}).items()]
    result += [f"{name}={json.dumps(settings[name])}" for name in SHORTHANDS if settings.get(name) is not None]
    return result + (["verbose=0"] if settings.get("quiet") else [])


def in_kernel() -> bool:
    """Whether this is a Jupyter kernel (IPython with a kernel: Jupyter, Colab, VS Code), without importing IPython."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return getattr(shell, "kernel", None) is not None


def progress(verbose: int):
    """The listener that shows a run's progress: in a Jupyter kernel the live image and `tqdm.auto` (imported
    only there), elsewhere the CLI's progress bar."""
    if in_kernel():
        from .notebook import Live
        return Live(verbose)
    from ..files.runner import Progress
    return Progress(verbose)
