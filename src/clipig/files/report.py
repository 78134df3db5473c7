"""Text forms of a run's statistics, shared by the CLI, the sidecar file and the GUI."""

from __future__ import annotations


def _num(value, width: int = 7, digits: int = 3) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else " " * (width - 1) + "-"


def _triple(values: dict, width: int = 7, digits: int = 3) -> str:
    """`mean (min - max)`, or `-` when there are no values."""
    if values["mean"] is None:
        return _num(None, width)
    return (f"{_num(values['mean'], width, digits)} ({_num(values['min'], width, digits).strip()} - "
            f"{_num(values['max'], width, digits).strip()})")


def statistics_table(targets: list[dict]) -> str:
    """Per target and feature, as the original CLIPig prints them: the weight it was last used with, on how
    many views it was trained (and their share of the target's views: 100% each for `select: all`), its loss
    and similarity (mean, min - max over the target's last 30 views); per constraint its weight, views and loss
    (times its weight). With an ensemble, each model's similarity follows on a line of its own."""
    lines = []
    for t in targets:
        lines.append(f"target {t['name']!r}: {t['epochs']} epochs, {t['views']} views")
        labels = ([f["label"] for f in t["features"]] + [f"constraint {c['label']}" for c in t["constraints"]]
                  + [f"  {m}" for f in t["features"] for m in f.get("models", ())])
        width = min(40, max(map(len, labels), default=7))
        lines.append(f"  {'':<{width}}  {'weight':>7}  {'count':>15}  {'loss mean (min - max)':<27}"
                     f"  similarity mean (min - max)")
        for row in t["features"] + [{**c, "label": f"constraint {c['label']}"} for c in t["constraints"]]:
            label = row["label"] if len(row["label"]) <= width else row["label"][:width - 1] + "~"
            line = (f"  {label:<{width}}  {_num(row['weight'])}  {row['count']:>6} ({row['share'] * 100:6.2f}%)"
                    f"  {_triple(row['loss']):<27}")
            if "similarity" in row:
                line += f"  {_triple(row['similarity'], digits=2)}"
            lines.append(line.rstrip())
            for model, sim in row.get("models", {}).items():
                name = f"  {model}" if len(model) + 2 <= width else f"  {model[:width - 3]}~"
                lines.append(f"  {name:<{width}}  {'':>7}  {'':>15}  {'':<27}  {_triple(sim, digits=2)}")
    return "\n".join(lines)


def run_line(event) -> str:
    """The state of the run (from an engine event): epoch, learning rate, loss and the picture's mean,
    standard deviation and saturation per channel."""
    picture = event.image()
    h, w = picture.shape[-2:]
    image = picture.flatten(1)
    saturation = (image - image.mean(0, keepdim=True)).abs().mean(1)
    loss = _num(float(event.loss) if event.loss is not None else None).strip()
    return (f"epoch {event.epoch} / {event.epochs}: learnrate {event.learnrate:.5f} (scale "
            f"{event.learnrate_scale:.3f}), loss {loss}; image {w}x{h}, mean {_rgb(image.mean(1))}, "
            f"std {_rgb(image.std(1))}, saturation {_rgb(saturation)}")


def _rgb(values) -> str:
    return " ".join(f"{v:.3f}" for v in values.tolist())


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"
