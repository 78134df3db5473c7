"""THE parameter registry: every parameter of an experiment, its type, default, variables and doc.

`validate(data)` turns merged YAML data into a tree of `Node`s whose leaves are `Value`s;
the reference documentation is generated from the same tree (`clipig.docs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import ConfigError, warn
from .params import CONSTRAINT_VARS, FEATURE_VARS, RES_TIME, TIME, at_least, in_range, timing
from .registry import CONSTRAINTS, PARAMETERIZATIONS, TRANSFORMS, PluginSpec, Registry
from .values import Param, Value, suggest


@dataclass
class Section:
    """A mapping of named parameters and sub-sections."""
    doc: str
    fields: dict[str, Any]
    one_of: tuple[str, ...] = ()  # exactly one of these keys must be given


@dataclass
class ListOf:
    """A list whose entries are all of the same section."""
    item: Section
    doc: str


@dataclass
class Plugins:
    """A list of `{name: params}` entries from a registry, optionally with shared entry fields."""
    registry: Registry
    doc: str
    extra: dict[str, Param] = field(default_factory=dict)
    postproc: bool = False  # only resolution-keeping transforms


@dataclass
class OneOf:
    """One entry of a registry, chosen by `type`: `name: fft` or `name: {type: fft, option: value, ...}`."""
    registry: Registry
    default: str
    doc: str

    def type_param(self) -> Param:
        return Param("str", self.default, choices=tuple(self.registry), doc=(
            f"The {self.registry.kind}: " + ", ".join(f"`{n}`" for n in self.registry) + ". Its options are "
            f"written beside `type`."))


class Node(dict):
    """A validated section: name -> Value | Node | list | PluginEntry | None, with attribute access."""

    def __init__(self, path: str, items: dict):
        super().__init__(items)
        self.path = path

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{self.path or 'config'} has no parameter {name!r}") from None


@dataclass
class PluginEntry:
    """One transform/constraint/postproc entry: the plugin, its parameters, and entry fields (start, end...)."""
    spec: PluginSpec
    params: Node
    entry: Node
    path: str

    @property
    def name(self) -> str:
        return self.spec.name

    def arguments(self, variables: dict, rng=None) -> dict:
        return {k: (v(variables, rng) if isinstance(v, Value) else None) for k, v in self.params.items()}


@dataclass
class Chosen:
    """The validated entry of a `OneOf`: the chosen plugin and its options."""
    spec: PluginSpec
    params: Node
    path: str

    @property
    def name(self) -> str:
        return self.spec.name

    def arguments(self, variables: dict) -> dict:
        return {k: v(variables) for k, v in self.params.items()}


ENTRY_FIELDS = {
    "active": Param("bool", True, doc="A boolean to turn the entry off during development without deleting it."),
    **timing("the entry"),
}


def build_schema() -> Section:
    """The tree of all parameters; the plugins come from their registries (filled by `clipig.catalogue`)."""

    feature = Section("A feature to drive the image creation: a text or an image, converted to a CLIP feature.", {
        "text": Param("str", doc="A word, sentence or paragraph that describes the desired image contents."),
        "image": Param("str", doc="Path or URL of an image whose CLIP feature is the target. The image is resized "
                       "to the CLIP input size, ignoring the aspect ratio. URLs are downloaded once and cached "
                       "under the user cache (`~/.cache/clipig/img/<md5 of url>`)."),
        **timing("the feature"),
        "weight": Param("float", 1.0, groups=FEATURE_VARS, doc=(
            "A weight to control the influence of the feature. Negative weights are allowed and roughly mean: "
            "generate an image that is least like that feature. An expression that reads `sim` is evaluated for "
            "each view with that view's (scaled) similarity to this feature.")),
        "scale": Param("float", 1.0, groups=FEATURE_VARS, doc=(
            "Multiplied with the similarity to yield the similarity used: for `select: best`/`worst`, as `sim` "
            "of the weight expressions and in the statistics.")),
        "loss": Param("str", "cosine", groups=FEATURE_VARS, choices=("cosine", "l1", "l2"),
                      aliases={"mae": "l1", "mse": "l2"}, doc=(
            "The loss between current and desired feature. `cosine`: 1 - cosine similarity (CLIP was trained "
            "with it, the default). `l1`/`mae`: 100 times the mean absolute difference of the normalised "
            "feature vectors. `l2`/`mse`: 100 times their mean squared difference.")),
    }, one_of=("text", "image"))

    target = Section("A target: features, transforms and constraints that drive the image.", {
        "active": Param("bool", True, doc="A boolean to turn the target off without deleting it."),
        "name": Param("str", "target", doc="The name of the target, shown in the statistics."),
        **timing("the whole target"),
        "weight": Param("float", 1.0, groups=CONSTRAINT_VARS, doc=(
            "Multiplied with the loss of each view (its features and constraints). Its `sim` is the view's mean "
            "similarity to all features of the target.")),
        "model": Param("names", doc=(
            "The models of the ensemble (names from the top-level `model`) that judge this target's views; "
            "by default all. Their weights are divided by their sum, so a target that names one model is "
            "judged by that model alone, and the other models never see its views.")),
        "batch_size": Param("int", 1, groups=TIME, check=at_least(1), doc=(
            "The number of randomly transformed views of the image shown to CLIP in one epoch. The losses of "
            "all views (of all targets) are added up, so a larger batch also takes a larger step with `sgd`. A "
            "target without random transforms has one view whatever its batch size (all would be the same). "
            "100 epochs at batch size 10 are much faster than 1000 epochs at batch size 1. It may change "
            "during the run, e.g. `12 - 8 * t` (a fraction is cut to a whole number): two targets with the "
            "same feature can shift the views from one kind to another, as Disco Diffusion schedules its "
            "overview and inner views.")),
        "select": Param("str", "all", choices=("all", "best", "worst", "mix"), doc=(
            "How several features are used, per view. `all`: all feature losses, multiplied by their weights, "
            "are added. `best`: only the active feature with the highest similarity (times `fair` and `scale`) "
            "is trained, with its weight. `worst`: only the one with the lowest similarity, which spreads the "
            "training over all features. `mix`: the active features are averaged into one, `sum(weight * "
            "feature) / sum(abs(weight))`, which is then compared with the view using the loss function of the "
            "first feature; the weights are not applied again to that loss.")),
        "feature_scale": Param("str", "equal", choices=("equal", "fair"), doc=(
            "Scaling of each feature's similarity. `equal`: all factors are 1. `fair`: factors computed once, "
            "from the start picture (the whole image at the CLIP input size, before any transform), so that it "
            "has the same similarity to every feature: `1 / similarity`, divided by the largest of these, so "
            "the factor of the least similar feature is 1.")),
        "features": ListOf(feature, "The features (texts or images) of the target."),
        "transforms": Plugins(TRANSFORMS, "Transforms shape the views of the image before CLIP evaluates them, "
                              "in order; the result of each is clamped to [0, 1] (as in the original). The views "
                              "are then resized (bicubic) to the CLIP input size. Each entry may also have "
                              "`active`, `start` and `end`.", extra=ENTRY_FIELDS),
        "constraints": Plugins(CONSTRAINTS, "Constraints add losses computed on the transformed views without "
                               "CLIP (mean, saturation, blur, ...): on the views as CLIP sees them, at its input "
                               "size and clamped to [0, 1]. Each view's constraint losses are added to its "
                               "feature losses, times the target's weight."),
    })

    return Section("An experiment.", {
        "verbose": Param("int", 2, doc="0 = silent, 1 = progress bar, 2 = progress and periodic statistics."),
        "output": Param("str", "./", doc=(
            "Directory (must end with `/`, the file is named after the last YAML file) or filename (must end "
            "with `.png`) of the output. An existing file is never overwritten: a number is attached instead "
            "(`demo.png`, `demo-1.png`, ...).")),
        "snapshot_interval": Param("number", 20.0, check=at_least(0), doc=(
            "Interval for saving the current image to the output file while training: a float is seconds, an "
            "int is epochs, 0 disables snapshots.")),
        "epochs": Param("int", 300, check=at_least(1), doc=(
            "The number of training steps (each with every target's batch), numbered 0 to `epochs - 1`; the "
            "time `t` of an epoch is epoch / (epochs - 1): 0.0 at the first, exactly 1.0 at the last (with one "
            "epoch, 0.0).")),
        "start_epoch": Param("int", 0, check=at_least(0), doc=(
            "Epochs to skip at the start; used to continue a run (e.g. by the GUI after config changes).")),
        "seed": Param("int", doc=(
            "Seed of all random numbers of the run. The same configuration and seed give the same image on the "
            "same machine. Without it a seed is drawn and written to the sidecar YAML.")),
        "starts": Section("Begin the run several times and go on with the start the critic likes best: `count` "
                          "starts from the seeds `seed`, `seed + 1`, ... are trained together for `epochs` epochs, "
                          "and the run continues as the one whose loss was lowest over the second half of them, "
                          "exactly as the run of that seed alone (the chosen seed is printed and kept in the PNG's "
                          "provenance as `chosen_seed`; the recorded `seed` stays the run's, so its configuration "
                          "gives the same picture again). What the "
                          "first epochs settle (the background's colour, where a thing sits) often decides a "
                          "picture, and an unlucky start rarely recovers ([quality](quality.md#several-starts)). "
                          "`clipig rank` does the same across processes and files, judged by the similarity.", {
            "count": Param("int", 1, check=at_least(1), doc="The number of starts; 1: the run as it begins."),
            "epochs": Param("int", 40, check=at_least(1), doc=(
                "The epochs each start is trained before the choice (at most `epochs`): they cost `count` "
                "times the epochs alone, in a shared CLIP pass.")),
        }),
        "resolution": Param("int", [224, 224], length=2, groups=TIME, check=at_least(1), doc=(
            "Resolution of the image: one number for a square image or width and height. It may change during "
            "training, e.g. `224 if t < .2 else 448`; `interpolation` is used to resize. Whatever the "
            "resolution, each view is resized (bicubic) to the CLIP input size (224 for most models) before "
            "CLIP and the constraints see it, and clamped to [0, 1].")),
        "interpolation": Param("str", "cubic", groups=TIME, choices=("nearest", "linear", "cubic"),
                               aliases={"bilinear": "linear", "bicubic": "cubic"}, doc=(
            "Filter used when resizing the training image during training: `nearest`, `linear` (bilinear) or "
            "`cubic` (bicubic, antialiased when shrinking). The start image is always scaled bicubic.")),
        "model": Param("models", "ViT-B/32", doc=(
            "The CLIP model: an OpenAI name (`RN50`, `RN101`, `RN50x4`, `RN50x16`, `RN50x64`, `ViT-B/32`, "
            "`ViT-B/16`, `ViT-L/14`, `ViT-L/14@336px`), an open_clip `architecture/pretrained` name, an open_clip "
            "model on the Hugging Face hub as `hf-hub:ORG/NAME` (e.g. the robust `hf-hub:chs20/fare2-clip`, "
            "see [quality](quality.md#robust-critics)), `mini`, `mini-2`, `mini-3` or `mini-referee` (small CLIPs "
            "that come with CLIPig and know only a world of coloured shapes, see mini.md), a path to a local "
            "checkpoint (`ARCH:/path` to name its architecture; a file that `python -m clipig.mini.train` wrote "
            "is told by its content), or `random:<architecture>` for random "
            "weights (`random:tiny` is a very small CLIP for tests; `random:tiny:1` the same architecture with "
            "the weights of seed 1, seed 0 by default). Weights are downloaded to the user cache.\n\n"
            "A list of models is an ensemble: `[ViT-B/32, RN50]`, or items with a weight "
            "(`{name: ViT-B/32, weight: 2}`, 1 by default). Each view is shown to every model, resized to that "
            "model's input size (the views are made once and shared). A feature's similarity is the weighted "
            "mean of the models' similarities, and its loss the weighted mean of the models' losses, with the "
            "weights of the models a target uses (`targets[].model`) divided by their sum. A model named twice "
            "counts once, with the sum of its weights. An epoch costs one CLIP pass per model. With `verbose: "
            "2` the statistics show each model's similarity under the feature.")),
        "device": Param("str", "auto", doc="`auto` (CUDA if available), `cpu`, `cuda`, `cuda:1`, ..."),
        "precision": Param("str", "auto", choices=("auto", "fp32", "bf16", "fp16"), doc=(
            "Arithmetic of the CLIP pass: `auto` is bf16 on CPUs with bf16 instructions (AVX-512 BF16, AMX), "
            "fp32 on other CPUs, and mixed precision (fp16) on CUDA. `bf16` is mixed precision with bfloat16: on "
            "CPUs with bf16 instructions it makes the CLIP pass about 2.5x faster (elsewhere it is emulated and "
            "slower than fp32); images differ from fp32 only in the fine grain, and judged by the quality "
            "benchmark they are as good (docs/benchmarks.md). `fp32` gives the original's arithmetic.")),
        "residual_gradient": Param("float", 1.0, groups=TIME, check=in_range(0, 1), doc=(
            "A factor on the gradient that flows back through the residual branches of the models' image towers "
            "(a ViT's attention and MLP blocks, a ResNet's bottlenecks); the features are not changed. Below 1, "
            "more of the gradient takes the skip connections, and a picture that convinces the critic convinces "
            "other models more often too (the skip gradient method of adversarial transfer, Wu et al. 2020; "
            "measured with the mini critics in quality.md). 1, the default, is the plain gradient. It may change "
            "over time, e.g. `.5 + .5 * t`. Every model needs residual blocks CLIPig knows (open_clip's vision "
            "transformers and ResNets).")),
        "compile": Param("bool", False, doc=(
            "Compile the CLIP image tower with `torch.compile`. The first epoch then takes longer (about 15 s "
            "for ViT-B/32 on 2 CPU cores) and every new batch size compiles again; on the CPU it measured at "
            "most 2% faster than the default path, so it is off by default. Needs a C compiler on the CPU.")),
        "views_per_pass": Param("int", 0, check=at_least(0), doc=(
            "How many views (of all targets together) go through CLIP at once. `0`, the default, is automatic: "
            "all of them when they fit the free memory (CUDA: free device memory; CPU: available RAM), else "
            "as many as fit, measured once per model and view size; running out of memory anyway halves the "
            "number and repeats the epoch (down to one view per pass). Smaller passes need less memory for the same image within "
            "floating-point rounding (their gradients add up to the one-pass gradient); every split pass is "
            "run forward twice, so it costs about a third more time. See docs/long-runs.md.")),
        "autosave": Param("number", 300.0, check=at_least(0), doc=(
            "Seconds between saves of the run's state (the parameterization's tensors, optimizer, random "
            "generators, epoch, statistics) to `NAME.state` beside the image; `clipig resume NAME.png` continues from it. The "
            "state is also saved when the run ends (finished, Ctrl-C or failed); `0` saves only then.")),
        "video": Section("A video of the run: the image every `every` epochs, as MP4, animated GIF or WebP.", {
            "file": Param("str", doc=(
                "The video file: `.mp4` (H.264), `.gif` or `.webp`, or a directory ending with `/` (the video "
                "is then named after the image, as MP4). An existing file is never overwritten: a number is "
                "attached instead. Without it, no video is written. `--video NAME.mp4` sets it.")),
            "every": Param("int", 1, check=at_least(1), doc="A frame every this many epochs (and the first and last)."),
            "fps": Param("float", 30.0, check=at_least(0.1), doc="Frames per second of the video."),
        }),
        "learnrate": Param("float", 1.0, groups=RES_TIME, doc=(
            "The learning rate of the optimizer, scaled per optimizer so that 1.0 means about the same step size "
            "for each, and with every `parameterization`: the optimizer's rate is its base rate (see "
            "`optimizer`) times `learnrate` times `learnrate_scale`, set each epoch. That rate is available to "
            "other expressions as `learnrate`/`lr`.")),
        "learnrate_scale": Param("float", 1.0, groups=RES_TIME, doc=(
            "A factor for the learning rate, handy as an expression like `1. - t`. Available to other "
            "expressions as `learnrate_scale`/`lrs`.")),
        "optimizer": Param("str", "adam", choices=("adam", "adamw", "sgd", "rmsprop", "sparse_adam", "adadelta"),
                           aliases={"rmsprob": "rmsprop"}, doc=(
            "The torch optimizer for the gradient descent, with its base rate: `adam` (0.01), `adamw` (0.01), "
            "`sgd` (10), `rmsprop` (also spelled `rmsprob`; centered, momentum 0.1, 0.003), `adadelta` (20). "
            "`sparse_adam` is what the original CLIPig calls a plain RMSprop at 0.01 (not torch's SparseAdam, "
            "which cannot train dense pixels); it is kept so that its experiments give the same picture. A "
            "change of `resolution` starts the optimizer afresh.")),
        "parameterization": OneOf(PARAMETERIZATIONS, "pixels", (
            "What the optimizer trains: the pixels themselves, or a representation that becomes the image "
            "(`fft`, `pyramid`), optionally in decorrelated colours. Shorthand `parameterization: fft`, or a map "
            "`{type: fft, decay: 1.5, decorrelate: true}`. Every type starts from the `init` image exactly, "
            "keeps the picture through resolution changes and post-processing, and `learnrate: 1` gives about "
            "the same step size with each (see [parameterizations](parameterizations.md)).")),
        "init": Section("How the pixels are initialised. Default is random pixels. The start image (noise or "
                        "`image`) is made at `init.resolution`, multiplied by `std` and `mean` is added, then "
                        "it is scaled (bicubic) to `resolution` and clamped to [0, 1].", {
            "resolution": Param("int", length=2, check=at_least(1), doc=(
                "Resolution of the noise or loaded image before it is scaled to the training resolution "
                "(e.g. `10` for a smooth, low-resolution noise).")),
            "mean": Param("float", [0.5, 0.5, 0.5], length=3, doc=(
                "The mean (brightness) of the initial pixel noise: one number for gray or three for RGB. Also "
                "added to an `image` (after multiplying it by `std`): with an image, `mean: 0, std: 1` keeps "
                "it as it is, the defaults give a pale version of it.")),
            "std": Param("float", [0.1, 0.1, 0.1], length=3, check=at_least(0), doc=(
                "The standard deviation of the initial pixel noise: one number or three for RGB. An `image` is "
                "multiplied by it.")),
            "image": Param("str", doc=(
                "A file name of an image to start from: scaled (bicubic, keeping its aspect ratio) to cover "
                "`init.resolution` (or `resolution`) and cropped at the centre, then `* std + mean`.")),
            "image_tensor": Param("list", doc=(
                "A [C, H, W] nested list of pixel values to start from, scaled and cropped like `image` but "
                "without `std`, `mean` and clamping. The original's GUI wrote it to continue training after "
                "config changes; CLIPig's live editor continues through the run's state instead (as `clipig "
                "resume` does), and reads this value like any other, so that files that hold it still run.")),
        }),
        "targets": ListOf(target, "The targets that define the desired image."),
        "postproc": Plugins(TRANSFORMS, "Post-processing: resolution-keeping transforms applied to the pixels "
                            "directly at the start of each epoch (before the views are made), outside the "
                            "gradient. They work on the trained values themselves, which may lie outside [0, 1]; "
                            "the result of each active entry is clamped to [0, 1] (as in the original).",
                            extra=ENTRY_FIELDS, postproc=True),
    })


_SCHEMA: Section | None = None


def schema() -> Section:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = build_schema()
    return _SCHEMA


def validate(data: dict) -> Node:
    """Validate merged YAML data (a dict, possibly with `.locs` from the loader) into a Node tree."""
    if not isinstance(data, dict):
        raise ConfigError(f"an experiment must be a mapping of parameters, got {type(data).__name__}")
    config = _section(schema(), data, "")
    _check_target_models(config)
    _check_drawn_postproc(config)
    check_at_start(config)
    return config


def _check_target_models(node: Node) -> None:
    """A target's `model` names only models of the run's `model`."""
    names = [m["name"] for m in node.model()]
    for target in node.targets:
        for name in target.model() if target.model is not None else ():
            if name not in names:
                raise ConfigError(f"{name!r} is not one of the run's models; `model` names: {', '.join(names)}"
                                  + suggest(name, names), target.model.path).located(*target.model.loc)


def _check_drawn_postproc(node: Node) -> None:
    """Post-processing edits pixels, which a drawing (a parameterization that cannot show every image) cannot
    take back."""
    if node.postproc and not node.parameterization.spec.fn.exact:
        entry = node.postproc[0]
        loc = next((v.loc for v in entry.params.values() if isinstance(v, Value)), (None, None))
        exact = [name for name, spec in PARAMETERIZATIONS.items() if spec.fn.exact]
        raise ConfigError(f"post-processing edits pixels, which `parameterization: {node.parameterization.name}` "
                          f"cannot show (it only draws); leave out `postproc` or choose {' or '.join(exact)}",
                          entry.path).located(*loc)


def check_at_start(config: Node) -> None:
    """Evaluate every expression once with the variables at their start values (the first epoch, the
    initial resolution and learnrate, similarity 0), so that one which cannot work fails now, with its file
    and line, before a model is loaded. Random functions draw from a generator of their own here."""
    import random

    from .expressions import learnrate_variables, resolution_variables, similarity_variables, time_variables
    rng = random.Random(0)
    variables = {**time_variables(config.start_epoch(), config.epochs()), **similarity_variables(0.0)}
    variables.update(resolution_variables(*config.resolution(variables, rng)))
    variables.update(learnrate_variables(config.learnrate(variables, rng), config.learnrate_scale(variables, rng)))
    for value in _values(config):
        if not value.is_constant:
            value(variables, rng)


def _values(node) -> Iterator[Value]:
    if isinstance(node, Value):
        yield node
    elif isinstance(node, PluginEntry):
        yield from _values(node.params)
        yield from _values(node.entry)
    elif isinstance(node, (dict, list)):
        for item in node.values() if isinstance(node, dict) else node:
            yield from _values(item)


def _loc(container, key):
    locs = getattr(container, "locs", None)
    if locs is None:
        return None, None
    try:
        return locs[key]
    except (KeyError, IndexError, TypeError):
        return getattr(container, "loc", (None, None))


def _child(path: str, key) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


def _located(fn, container, key):
    """fn() with the file:line of `container[key]` on its errors and on the values it returns (for errors
    of expressions that fail later, during the run)."""
    try:
        result = fn()
    except ConfigError as e:
        raise e.located(*_loc(container, key)) from None
    for value in result.values() if isinstance(result, dict) else [result]:
        if isinstance(value, Value) and value.loc == (None, None):
            value.loc = _loc(container, key)
    return result


def _section(section: Section, data: dict, path: str) -> Node:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of parameters, got {data!r}", path)
    for key in data:
        if key not in section.fields:
            raise ConfigError(f"unknown parameter {key!r}" + suggest(str(key), section.fields)
                              + f"; known here: {', '.join(section.fields)}", _child(path, key)
                              ).located(*_loc(data, key))
    given = [k for k in section.one_of if data.get(k) is not None]
    if section.one_of and len(given) != 1:
        raise ConfigError(f"needs exactly one of {' or '.join(section.one_of)}"
                          + (f", got {' and '.join(given)}" if given else ""), path
                          ).located(*getattr(data, "loc", (None, None)))
    items = {}
    for name, spec in section.fields.items():
        raw, sub = data.get(name), _child(path, name)
        items[name] = _located(lambda: _field(spec, raw, sub), data, name)
    return Node(path, items)


def _field(spec, raw, path):
    if isinstance(spec, Param):
        if raw is None:
            return None if spec.default is None else spec.parse(spec.default, path)
        return spec.parse(raw, path)
    if isinstance(spec, Section):
        return _section(spec, {} if raw is None else raw, path)
    if isinstance(spec, OneOf):
        return _chosen(spec, raw, path)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"expected a list (entries starting with '-'), got {raw!r}", path)
    if isinstance(spec, ListOf):
        return [_located(lambda: _section(spec.item, item, _child(path, i)), raw, i)
                for i, item in enumerate(raw) if item is not None]
    return [entry for i, item in enumerate(raw) if item is not None
            for entry in _located(lambda: _plugin_entries(spec, item, _child(path, i)), raw, i)]


def _plugin_entries(plugins: Plugins, data, path: str) -> list[PluginEntry]:
    """The plugins of one list entry, in the order written: `- {random_shift: .1, random_rotate: 10}` holds two.
    They share the entry's fields (`active`, `start`, `end`) and its path (`transforms[2].random_rotate.degree`
    counts list entries as written). A plugin without a value (`- noise:`) is skipped with a warning."""
    registry = plugins.registry
    allowed = [n for n, s in registry.items() if s.keeps_resolution or not plugins.postproc]
    if not isinstance(data, dict):
        raise ConfigError(f"expected an entry like '- {allowed[0]}: ...', got {data!r}; "
                          f"available: {', '.join(allowed)}", path)
    names = [k for k in data if k not in plugins.extra]
    if not names:
        raise ConfigError(f"each entry needs a {registry.kind} name; available: {', '.join(allowed)}", path
                          ).located(*getattr(data, "loc", (None, None)))
    for name in names:
        if name not in registry:
            raise ConfigError(f"unknown {registry.kind} {name!r}" + suggest(str(name), allowed)
                              + f"; available: {', '.join(allowed)}", _child(path, name)).located(*_loc(data, name))
        if plugins.postproc and not registry[name].keeps_resolution:
            raise ConfigError(f"{name!r} changes the resolution, so it cannot be used for post-processing; "
                              f"available: {', '.join(allowed)}", _child(path, name)).located(*_loc(data, name))
    entry = Node(path, {k: _located(lambda: _field(p, data.get(k), _child(path, k)), data, k)
                        for k, p in plugins.extra.items()})
    result = []
    for name in names:
        if data[name] is None:
            hint = "" if registry[name].direct else f" (write '{name}: {{}}' for its defaults)"
            warn(f"{name} has no value, so it is left out{hint}", _child(path, name), *_loc(data, name))
            continue
        params = _located(lambda: parse_plugin_params(registry[name], data[name], _child(path, name)), data, name)
        result.append(PluginEntry(registry[name], params, entry, path))
    return result


def _chosen(one_of: OneOf, raw, path: str) -> Chosen:
    """`name`, or a mapping `{type: name, option: value, ...}` (without `type`: the default)."""
    data = {"type": raw} if isinstance(raw, str) else {} if raw is None else raw
    if not isinstance(data, dict):
        raise ConfigError(f"expected a {one_of.registry.kind} name or a mapping with `type`, got {raw!r}; "
                          f"available: {', '.join(one_of.registry)}", path)
    name = _located(lambda: _field(one_of.type_param(), data.get("type"), _child(path, "type")), data, "type")
    spec = one_of.registry[name()]
    return Chosen(spec, _plugin_mapping(spec, data, path, skip=("type",)), path)


def parse_plugin_params(spec: PluginSpec, raw, path: str) -> Node:
    """Parameters of one plugin entry; a non-mapping value is a shorthand (see the docs)."""
    if spec.direct:
        (name, param), = spec.params.items()
        return Node(path, {name: _field(param, raw, path)})
    if raw is None or isinstance(raw, dict):
        return _plugin_mapping(spec, raw or {}, path)
    try:
        return _plugin_mapping(spec, {spec.first: raw}, path)
    except ConfigError as first_error:
        from .values import split_items
        items = raw if isinstance(raw, list) else split_items(str(raw))
        if 1 < len(items) <= len(spec.params):  # positional shorthand: one value per parameter, in order
            try:
                return _plugin_mapping(spec, dict(zip(spec.params, items)), path)
            except ConfigError:
                pass
        raise first_error


def _plugin_mapping(spec: PluginSpec, raw: dict, path: str, skip=()) -> Node:
    for key in raw:
        if key not in spec.params and key not in skip:
            raise ConfigError(f"unknown parameter {key!r} of {spec.name}" + suggest(str(key), spec.params)
                              + f"; known: {', '.join(spec.params)}", _child(path, key)).located(*_loc(raw, key))
    items = {}
    for name, param in spec.params.items():
        sub = _child(path, name)
        if raw.get(name) is None and param.required:
            raise ConfigError(f"{spec.name} needs {name!r} ({param.type_text()})", sub
                              ).located(*getattr(raw, "loc", (None, None)))
        items[name] = _located(lambda: _field(param, raw.get(name), sub), raw, name)
    return Node(path, items)


def walk(section: Section | None = None, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """All (path, declaration) pairs in reference order, e.g. ('targets.transforms.blur.sigma', Param)."""
    for name, spec in (section or schema()).fields.items():
        path = _child(prefix, name)
        yield path, spec
        if isinstance(spec, Section):
            yield from walk(spec, path)
        elif isinstance(spec, ListOf):
            yield from walk(spec.item, path)
        elif isinstance(spec, OneOf):
            yield _child(path, "type"), spec.type_param()
            for pname, plugin in spec.registry.items():
                yield _child(path, pname), plugin
                for param_name, param in plugin.params.items():
                    yield _child(_child(path, pname), param_name), param
        elif isinstance(spec, Plugins):
            for pname, param in spec.extra.items():
                yield _child(path, pname), param
            for pname, plugin in spec.registry.items():
                if spec.postproc and not plugin.keeps_resolution:
                    continue
                yield _child(path, pname), plugin
                if not plugin.direct:
                    for param_name, param in plugin.params.items():
                        yield _child(_child(path, pname), param_name), param


def to_data(node) -> Any:
    """The validated tree back as plain YAML data, with every default filled in (for the sidecar file)."""
    if isinstance(node, Value):
        return plain(node.raw)
    if isinstance(node, Chosen):
        return {"type": node.name, **{k: to_data(v) for k, v in node.params.items() if v is not None}}
    if isinstance(node, PluginEntry):
        params = node.params
        value = (to_data(next(iter(params.values()))) if node.spec.direct
                 else {k: to_data(v) for k, v in params.items() if v is not None})
        return {node.name: value, **{k: to_data(v) for k, v in node.entry.items() if v is not None}}
    if isinstance(node, dict):
        return {k: to_data(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [to_data(v) for v in node]
    return node


def plain(raw):
    """Loader containers (LocDict/LocList) back to plain dicts and lists."""
    if isinstance(raw, dict):
        return {k: plain(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [plain(v) for v in raw]
    return raw
