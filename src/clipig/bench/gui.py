"""How much does the live editor slow training down?  `python -m clipig.gui.bench [FILE.yaml] [options]`

Runs the same experiment (same seed) alternately
  * like the CLI: the Engine in the main thread, no page,
  * like the CLI but in a worker thread (isolates the cost of the GUI itself), and
  * in the GUI: the Session's worker thread with the aiohttp server running and one page connected over the
    WebSocket from another process, receiving every state message and image,
and prints the best epochs per second of each (the least disturbed run) and the CPU time of the whole
process per epoch (all its threads), which other load on the machine disturbs less.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import threading
import time

from ..run import threads

DEFAULT = """\
model: random:tiny
epochs: 100
seed: 1
resolution: 224
targets:
  - batch_size: 5
    features:
      - text: close-up of a spoon with a curly handle
    transforms:
      - noise: 0.1
      - repeat: 3
      - random_rotate:
          degree: -30 30
          center: .4 .6
      - center_crop: 224
    constraints:
      - blur:
          kernel_size: 51
"""

CLIENT = """
import asyncio, signal, sys, aiohttp
counts = {"text": 0, "binary": 0, "bytes": 0}
async def main(url, token):
    async with aiohttp.ClientSession(headers={"X-CLIPig-Token": token}) as s:
        async with s.ws_connect(url) as ws:
            print("connected", flush=True)
            async for m in ws:
                if m.type == aiohttp.WSMsgType.TEXT: counts["text"] += 1
                elif m.type == aiohttp.WSMsgType.BINARY: counts["binary"] += 1; counts["bytes"] += len(m.data)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
try:
    asyncio.run(main(sys.argv[1], sys.argv[2]))
finally:
    print(f"page received {counts['text']} state messages, {counts['binary']} images "
          f"({counts['bytes'] / 1e6:.1f} MB)", flush=True)
"""


def start_server(session, token: str):
    """The GUI's server on a free port in a background thread; returns the port."""
    from aiohttp import web

    from ..gui.server import BIND, make_app
    ready, box = threading.Event(), {}

    async def serve():
        app = make_app(session, token)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        app[BIND]["port"] = box["port"] = runner.addresses[0][1]
        ready.set()
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    ready.wait(30)
    return box["port"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipig.gui.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", metavar="FILE.yaml", help="experiment (default: a curly spoon on random:tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    p.add_argument("--repeat", type=int, default=5, help="runs of each kind (default: 5)")
    threads.add_option(p, "1, so that the CPU time of the training is that of one thread")
    args = p.parse_args(argv)
    import secrets

    import torch
    import yaml

    from ..config.loader import load
    from ..config.schema import to_data
    from ..gui.session import Session
    from ..run.engine import open_run
    threads.configure(args.threads or 1)
    texts = [] if args.files else [DEFAULT]
    config = load(args.files, texts, ["verbose=0", *args.overrides])
    seed = config.seed() if config.seed is not None else 1
    config = load(args.files, texts, ["verbose=0", *args.overrides, f"seed={seed}"])
    text = yaml.safe_dump(to_data(config), sort_keys=False)  # the same experiment for the GUI, as one text

    session, token = Session(), secrets.token_urlsafe(16)
    port = start_server(session, token)
    client = subprocess.Popen([sys.executable, "-c", CLIENT, f"ws://127.0.0.1:{port}/ws", token],
                              stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "connected"

    class Clock:
        """Listener: CPU time of the training thread and of the whole process from `start` to `end`."""
        def __call__(self, event):
            if event.kind == "start":
                self.thread, self.process = time.thread_time(), time.process_time()
            elif event.kind == "end":
                self.thread, self.process = time.thread_time() - self.thread, time.process_time() - self.process

    listener_seconds, gui_clock = [0.0], [None]
    on_event = session.on_event

    def timed_listener(event):  # the GUI's listener, timed (it runs in the training thread)
        gui_clock[0](event)
        t = time.perf_counter()
        on_event(event)
        listener_seconds[0] += time.perf_counter() - t

    session.on_event = timed_listener

    def measure(run) -> dict:
        clock = Clock()
        listener_seconds[0] = 0.0
        engine = run(clock)
        n = engine.epochs_done
        return {"rate": n / engine.runtime, "thread": clock.thread / n, "process": clock.process / n,
                "listener": listener_seconds[0] / n}

    def plain(clock):
        engine = open_run(config, [clock])
        engine.run()
        return engine

    def cli():
        return measure(plain)

    def thread():  # like the CLI, but in a worker thread as in the GUI
        def run(clock):
            box = {}
            worker = threading.Thread(target=lambda: box.update(engine=plain(clock)))
            worker.start()
            worker.join()
            return box["engine"]
        return measure(run)

    def gui():
        while session.clients < 1:
            time.sleep(0.01)

        def run(clock):
            gui_clock[0] = clock
            session.reset(text)
            session.thread.join()
            if session.status != "done":
                raise RuntimeError(session.message)
            return session.last
        return measure(run)

    warm = plain(Clock())  # warm-up
    print(f"{config.epochs()} epochs of {', '.join(warm.critic.names)} on {warm.device}, "
          f"{torch.get_num_threads()} threads", flush=True)
    kinds = {"cli": cli, "thread": thread, "gui": gui}
    results: dict[str, list[dict]] = {name: [] for name in kinds}
    for i in range(args.repeat):
        for name in (list(kinds) if i % 2 == 0 else list(reversed(kinds))):
            r = kinds[name]()
            results[name].append(r)
            print(f"  {name:<6} {r['rate']:7.2f} epochs/s; CPU per epoch: training thread "
                  f"{1000 * r['thread']:6.1f} ms, process {1000 * r['process']:6.1f} ms", flush=True)
    client.terminate()
    print(client.communicate()[0].strip())
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    best = {name: max(r["rate"] for r in rs) for name, rs in results.items()}
    for name, label in (("cli", "CLI"), ("thread", "CLI loop in a thread"), ("gui", "GUI")):
        print(f"{label:<21} best {best[name]:7.2f} epochs/s, median CPU per epoch: training thread "
              f"{1000 * med[name]['thread']:6.1f} ms, process {1000 * med[name]['process']:6.1f} ms")
    g = med["gui"]
    own = g["listener"] + max(0.0, g["process"] - g["thread"] - (med["thread"]["process"] - med["thread"]["thread"]))
    print(f"GUI's own cost: {1000 * g['listener']:.2f} ms per epoch in the training thread (listener) + "
          f"{1000 * (own - g['listener']):.2f} ms per epoch in other threads (server, PNG encoding)")
    print(f"  = {100 * own / (g['thread'] - g['listener']):.1f}% of the training's CPU time "
          f"(the slowdown on a machine with no core to spare)")
    print(f"wall clock, best runs: GUI {100 * (1 - best['gui'] / best['cli']):+.1f}% slower than the CLI, "
          f"{100 * (1 - best['gui'] / best['thread']):+.1f}% than the CLI loop in a thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
