"""`clipig gui [FILE.yaml]`: the live editor, a web page to write an experiment and watch the image emerge."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..run import threads

DEFAULT_PORT = 8765
PORT_TRIES = 20  # like Jupyter: with the default port busy, the next ones are tried


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipig gui", description=(
        "The live editor: write an experiment in the browser, Alt-S trains (continuing after edits), Alt-X stops. "
        "Prints the URL with its access token."))
    p.add_argument("file", nargs="?", metavar="FILE.yaml",
                   help="experiment to edit; it is saved back only when you ask (a new file is fine)")
    p.add_argument("--port", type=int, help=f"port (default: {DEFAULT_PORT} or the next free one; 0 = any)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default: 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    threads.add_option(p)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import asyncio
    import secrets

    from .session import Session
    threads.configure(args.threads)
    file, text = None, None
    if args.file:
        file = Path(args.file)
        if file.suffix.lower() not in (".yaml", ".yml"):
            print(f"error: {file}: the experiment file must end with .yaml or .yml", file=sys.stderr)
            return 2
        if file.exists():
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                print(f"error: {file}: cannot read the file: {e}", file=sys.stderr)
                return 2
    if args.host.strip("[]") in ("0.0.0.0", "::", ""):
        print("WARNING: listening on all network interfaces; anyone who can reach this machine and has the URL "
              "with its token can run experiments and write files here.", file=sys.stderr, flush=True)
    session = Session(file, text)  # a new file starts with the template text
    if file is not None and text is None:
        session.saved_text = ""
    try:
        asyncio.run(serve(session, secrets.token_urlsafe(24), args.host, args.port, not args.no_browser))
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        session.shutdown()
    return 0


def url_of(host: str, port: int, token: str) -> str:
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/?token={token}"


async def serve(session, token: str, host: str, port: int | None, browser: bool) -> None:
    import asyncio

    from aiohttp import web

    from .server import BIND, make_app
    app = make_app(session, token, host)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ports = [port] if port is not None else range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES)
    try:
        for i, candidate in enumerate(ports):
            site = web.TCPSite(runner, host.strip("[]"), candidate)
            try:
                await site.start()
                break
            except OSError:
                await site.stop()
                if i == len(ports) - 1:
                    raise
        bound = runner.addresses[0][1]  # the real port when 0 was asked for
        app[BIND]["port"] = bound
        url = url_of(host, bound, token)
        print("CLIPig live editor; open this URL in a browser (Ctrl-C stops the server):", flush=True)
        print(f"    {url}", flush=True)
        if browser:
            import threading
            import webbrowser
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
