"""Text forms of a run's statistics, shared by the CLI, the sidecar file and the GUI."""

from __future__ import annotations


def _num(value, width: int = 7, digits: int = 3) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else " " * (width - 1) + "-"


def statistics_table(targets: list[dict]) -> str:
    """Per target and feature: applied weight, training count and share, loss and similarity mean/min/max
    (with an ensemble also each model's similarity, on a line below); per constraint its loss."""
    lines = []
    for t in targets:
        lines.append(f"target {t['name']!r} ({t['epochs']} epochs)")
        if t["features"]:
            width = min(40, max([len(f["label"]) for f in t["features"]]
                                + [len(m) + 2 for f in t["features"] for m in f.get("models", ())]))
            lines.append(f"  {'feature':<{width}}  {'weight':>7}  {'count':>12}  "
                         f"{'loss mean/min/max':>25}  {'similarity mean/min/max':>25}")
            for f in t["features"]:
                label = f["label"] if len(f["label"]) <= width else f["label"][:width - 1] + "~"
                loss, sim = f["loss"], f["similarity"]
                lines.append(f"  {label:<{width}}  {_num(f['weight'])}  {f['count']:>5} ({f['share'] * 100:5.1f}%)"
                             f"  {_num(loss['mean'])} {_num(loss['min'])} {_num(loss['max'])}"
                             f"  {_num(sim['mean'], digits=2)} {_num(sim['min'], digits=2)} "
                             f"{_num(sim['max'], digits=2)}")
                for model, sim in f.get("models", {}).items():
                    name = f"  {model}" if len(model) + 2 <= width else f"  {model[:width - 3]}~"
                    lines.append(f"  {name:<{width}}  {'':48}  {_num(sim['mean'], digits=2)} "
                                 f"{_num(sim['min'], digits=2)} {_num(sim['max'], digits=2)}")
        for c in t["constraints"]:
            loss = c["loss"]
            lines.append(f"  constraint {c['label']:<20} loss {_num(loss['mean'], digits=5, width=9)} "
                         f"(min {_num(loss['min'], digits=5, width=9)}, max {_num(loss['max'], digits=5, width=9)})")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"
