"""`clipig batch TEMPLATE.yaml [TEMPLATE2.yaml] --grid animal=animals.txt --grid thing=things.txt -o DIR/`

Fills the `{animal}` and `{thing}` placeholders in every string of the templates with each combination
of the grid values, renders every cell (several templates are one more axis) and writes DIR/index.html,
a self-contained gallery: arrow keys move through the grid, number keys switch the template.
Images are DIR/TEMPLATE/VALUE_VALUE.png with their sidecar YAML and record; the same command resumes.
Each cell's seed comes from its grid values (unless the template sets one), so every template renders a
cell from the same seed and results are reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import sys
from pathlib import Path

from . import workers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipig batch", description=(
        "Render a grid of experiments from templates with {placeholders} and write an HTML gallery."))
    p.add_argument("templates", nargs="+", metavar="TEMPLATE.yaml", help="experiment templates (one per method)")
    p.add_argument("--grid", action="append", required=True, metavar="NAME=FILE",
                   help="placeholder {NAME} takes each line of FILE (or the comma-separated values a,b,c); "
                        "repeatable, every combination is rendered")
    p.add_argument("-o", "--output", help="output folder (default: TEMPLATE-batch/)")
    workers.add_options(p, " in every template")
    return p


def grid_axis(text: str) -> tuple[str, list[str]]:
    """`name=file.txt` (one value per line) or `name=a,b,c`."""
    from ..config.errors import ConfigError
    from .rate import lines
    name, sep, source = text.partition("=")
    if not sep or not re.fullmatch(r"\w+", name.strip()):
        raise ConfigError(f"--grid expects NAME=FILE or NAME=a,b,c, got {text!r}")
    values = lines(source) if Path(source).is_file() else [v.strip() for v in source.split(",") if v.strip()]
    if not values:
        raise ConfigError(f"--grid {text}: no values")
    return name.strip(), list(dict.fromkeys(values))


def fill(value, values: dict[str, str]):
    """Replace `{name}` in every string (keys included) of the data; other braces stay as they are."""
    if isinstance(value, str):
        for name, text in values.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {fill(k, values): fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def cell_seed(combo: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(combo).encode()).digest()[:4], "little") >> 1


def prompt(data: dict) -> str:
    texts = [f.get("text") for t in data.get("targets") or [] for f in t.get("features") or []]
    return " | ".join(str(t) for t in texts if t)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ..config.errors import ConfigError
    from ..config.loader import load_data
    from ..config.schema import plain, validate

    axes = [grid_axis(g) for g in args.grid]
    if len({name for name, _ in axes}) != len(axes):
        raise ConfigError("each --grid NAME may be given once")
    overrides = workers.overrides(args)
    stems = [slug(Path(t).stem) for t in args.templates]
    stems = stems if len(set(stems)) == len(stems) else [f"{i + 1}-{s}" for i, s in enumerate(stems)]
    templates = [plain(load_data([t], overrides=overrides)) for t in args.templates]
    for path, template in zip(args.templates, templates):
        unused = [n for n, _ in axes if "{" + n + "}" not in json.dumps(template)]
        if unused:
            print(f"warning: {path} has no placeholder {', '.join('{' + n + '}' for n in unused)}",
                  file=sys.stderr)

    names = [n for n, _ in axes]
    combos = list(itertools.product(*(values for _, values in axes)))
    cells, jobs, used = {}, [], set()
    for combo in combos:
        cell = base = "_".join(slug(v) for v in combo)
        n = 1
        while cell in used:  # values that differ only in punctuation or case
            cell, n = f"{base}-{n}", n + 1
        used.add(cell)
        values = dict(zip(names, combo))
        for index, (stem, path, template) in enumerate(zip(stems, args.templates, templates)):
            data = fill(template, values)
            if data.get("seed") is None:
                data["seed"] = cell_seed(combo)
            try:
                validate(data)
            except ConfigError as e:
                raise ConfigError(e.message, e.path, file=f"{path} with {values}") from None
            job = {"name": f"{stem}/{cell}", "data": data, "meta": {"template": stem, "values": values}}
            jobs.append(job)
            cells[index, combo] = {"name": job["name"], "file": f"{job['name']}.png", "prompt": prompt(data)}

    root = Path(args.output or f"{stems[0]}-batch/")
    root.mkdir(parents=True, exist_ok=True)
    write_index(root, stems, axes, cells)
    records, failed = workers.run_jobs(root, jobs, args, "images")
    for cell in cells.values():
        record = records.get(cell["name"])
        cell.update(sim=record["sim"] if record else None, done=record is not None)
    path = write_index(root, stems, axes, cells)
    if not args.quiet:
        print(f"saved {path}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} images failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def write_index(root: Path, stems: list[str], axes, cells: dict) -> Path:
    """The gallery: columns are the first grid's values, rows the combinations of the others."""
    from ..files.output import atomic_write
    columns = axes[0][1]
    rows = list(itertools.product(*(values for _, values in axes[1:])))
    grid = [[[cells.get((t, (col, *row))) for col in columns] for row in rows] for t in range(len(stems))]
    data = {"templates": stems, "axes": [name for name, _ in axes], "columns": columns,
            "rows": [" / ".join(row) for row in rows], "cells": grid}
    text = PAGE.replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    path = root / "index.html"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CLIPig batch</title>
<style>
body { font-family: sans-serif; background: #222; color: #ddd; margin: 1em; }
#tabs span { display: inline-block; padding: .3em .8em; margin-right: .3em; cursor: pointer; background: #333; }
#tabs span.active { background: #686; color: #fff; }
#main { display: flex; gap: 1.5em; align-items: flex-start; margin-top: 1em; }
#view { position: sticky; top: 1em; width: 360px; flex: none; }
#view img { width: 360px; height: 360px; object-fit: contain; image-rendering: pixelated; background: #111; }
#prompt { font-size: 1.2em; margin: .5em 0; color: #fff; }
#info, .hint { color: #999; font-size: .9em; }
table { border-collapse: collapse; }
th { font-weight: normal; color: #aaa; padding: 2px 6px; white-space: nowrap; }
td.cell { padding: 2px; border: 2px solid transparent; cursor: pointer; }
td.cell.selected { border-color: #fc4; }
td.cell img { width: 64px; height: 64px; display: block; image-rendering: pixelated; background: #111; }
</style></head>
<body>
<div id="tabs"></div>
<div class="hint">arrow keys: move through the grid, number keys: switch the template, click: select</div>
<div id="main">
  <div id="view"><img alt=""><div id="prompt"></div><div id="info"></div></div>
  <table id="grid"></table>
</div>
<script type="application/json" id="data">__DATA__</script>
<script>
const D = JSON.parse(document.getElementById("data").textContent);
const state = {t: 0, r: 0, c: 0};
const el = (tag, props = {}, children = []) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
};

function build() {
  document.getElementById("tabs").replaceChildren(...D.templates.map((name, t) => el("span",
    {className: t === state.t ? "tab active" : "tab", textContent: `${t + 1} ${name}`,
     onclick: () => { state.t = t; build(); }})));
  const head = el("tr", {}, [el("th"), ...D.columns.map(c => el("th", {textContent: c}))]);
  const rows = D.rows.map((label, r) => el("tr", {}, [el("th", {textContent: label}),
    ...D.columns.map((_, c) => {
      const cell = D.cells[state.t][r][c];
      const img = el("img", {alt: "", loading: "lazy"});
      if (cell) img.src = cell.file;
      return el("td", {className: "cell", title: cell ? cell.prompt : "",
                       onclick: () => { state.r = r; state.c = c; select(); }}, [img]);
    })]));
  document.getElementById("grid").replaceChildren(head, ...rows);
  select();
}

function select() {
  const cell = D.cells[state.t][state.r][state.c];
  document.querySelectorAll("td.cell.selected").forEach(e => e.classList.remove("selected"));
  const td = document.querySelectorAll("#grid tr")[state.r + 1].children[state.c + 1];
  td.classList.add("selected");
  td.scrollIntoView({block: "nearest", inline: "nearest"});
  const img = document.querySelector("#view img");
  if (cell) img.src = cell.file; else img.removeAttribute("src");
  document.getElementById("prompt").textContent = cell ? cell.prompt : "";
  const values = [D.columns[state.c], D.rows[state.r]].filter(v => v).join(" / ");
  const sim = cell && cell.sim != null ? `, sim ${cell.sim.toFixed(2)}` : "";
  document.getElementById("info").textContent = `${D.templates[state.t]}: ${values}${sim}`;
  history.replaceState(null, "", `#${state.t},${state.r},${state.c}`);
}

document.addEventListener("keydown", e => {
  const moves = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
  if (moves[e.key]) {
    state.r = Math.min(D.rows.length - 1, Math.max(0, state.r + moves[e.key][0]));
    state.c = Math.min(D.columns.length - 1, Math.max(0, state.c + moves[e.key][1]));
    select();
  } else if (/^[1-9]$/.test(e.key) && +e.key <= D.templates.length) {
    state.t = +e.key - 1;
    build();
  } else return;
  e.preventDefault();
});

const [t, r, c] = location.hash.slice(1).split(",").map(Number);
if (t < D.templates.length && r < D.rows.length && c < D.columns.length && Math.min(t, r, c) >= 0) {
  Object.assign(state, {t, r, c});
}
console.log(D.templates.map((name, t) => `${name}:\\n` + D.cells[t].flat().filter(x => x)
  .map(x => x.prompt).join("\\n")).join("\\n\\n"));
build();
</script>
</body></html>
"""
