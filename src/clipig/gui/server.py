"""The live editor's web server (aiohttp): the page, a JSON API, a WebSocket for live state and images.

Security: every request needs the per-start token (`?token=` once, then a cookie or the `X-CLIPig-Token`
header); the Host must be a loopback name or the bound host (no DNS rebinding) and a present Origin must be
this server (no cross-site requests). Only the files in `static/` are served; configs are read and written
only at the path given on the command line or a path the user types (`.yaml`/`.yml`), never listed.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import secrets
from pathlib import Path

from aiohttp import WSMsgType, web

from .session import Refused, Session, error_info

STATIC = Path(__file__).parent / "static"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon"}
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
ANY_HOST = {"0.0.0.0", "::", ""}
PUSH_SECONDS = 0.1  # how often connected pages are sent changed state
FRAME_SECONDS = 0.25  # at most this often an image is encoded and sent
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

TOKEN = web.AppKey("token", str)
SESSION = web.AppKey("session", Session)
BIND = web.AppKey("bind", dict)
SOCKETS = web.AppKey("sockets", dict)
PUSHER = web.AppKey("pusher", asyncio.Task)
FRAME = web.AppKey("frame", dict)


# --- security -------------------------------------------------------------------------------------------------

def split_host(host: str) -> tuple[str, str | None]:
    """`[::1]:8765` -> ('::1', '8765'), `localhost` -> ('localhost', None)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def host_allowed(host: str | None, bound: str, port: int | None) -> bool:
    """Refuse DNS rebinding: the Host header must name this server by loopback name or by the bound host.
    Bound to all interfaces, any IP address is fine (rebinding needs a domain name)."""
    if not host:
        return False
    name, given_port = split_host(host)
    if given_port is not None and not given_port.isdigit():
        return False
    if name in LOOPBACK:
        return True
    bound = bound.strip("[]").lower()
    if bound in ANY_HOST:
        return is_ip(name)
    return name == bound and (given_port is None or port is None or int(given_port) == port)


def origin_allowed(origin: str | None, host: str) -> bool:
    """No Origin (not a cross-site browser request) or exactly this server's origin."""
    return origin is None or origin.lower() in (f"http://{host.lower()}", f"https://{host.lower()}")


def cookie_name(port: int | None) -> str:
    return f"clipig-token-{port}"  # cookies ignore ports: one per server so that two servers do not clash


def given_tokens(request: web.Request) -> list[str]:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    return [t for t in (request.query.get("token"), request.cookies.get(cookie_name(request.app[BIND]["port"])),
                        request.headers.get("X-CLIPig-Token"),
                        value if scheme.lower() in ("token", "bearer") else None) if t]


def refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


@web.middleware
async def guard(request: web.Request, handler):
    bind = request.app[BIND]
    if not host_allowed(request.host, bind["host"], bind["port"]):
        return refuse(403, "refused: unknown Host (use the URL printed by `clipig gui`)")
    if not origin_allowed(request.headers.get("Origin"), request.host):
        return refuse(403, "refused: cross-origin request")
    token = request.app[TOKEN]
    if not any(secrets.compare_digest(t.encode(), token.encode()) for t in given_tokens(request)):
        return refuse(401, "refused: this needs the access token; open the URL with ?token=... that "
                           "`clipig gui` printed")
    if request.query.get("token") and request.method == "GET" and request.path == "/":
        response = web.HTTPFound("/")  # keep the token out of the address bar and history
        set_cookie(response, request)
        return response
    response = await handler(request)
    if request.query.get("token") and not response.prepared:
        set_cookie(response, request)
    if not response.prepared:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def set_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.set_cookie(cookie_name(request.app[BIND]["port"]), request.app[TOKEN], httponly=True,
                        samesite="Strict", path="/")


# --- pages and files --------------------------------------------------------------------------------------------

def static_files() -> dict[str, Path]:
    """The only files this server reads for the page: those shipped in static/, by name."""
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in TYPES}


async def index(request: web.Request) -> web.Response:
    return serve_static("index.html", {"Content-Security-Policy": CSP})


async def static(request: web.Request) -> web.Response:
    return serve_static(request.match_info["name"])


def serve_static(name: str, headers: dict | None = None) -> web.Response:
    path = static_files().get(name)
    if path is None:
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=TYPES[path.suffix], charset="utf-8"
                        if path.suffix in (".html", ".js", ".css", ".svg") else None, headers=headers)


def png_bytes(image) -> bytes:
    from ..files.output import to_pil
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def image(request: web.Request) -> web.Response:
    _, png = await frame_png(request.app)
    if png is None:
        raise web.HTTPNotFound(text="no image yet")
    return web.Response(body=png, content_type="image/png")


async def snapshot_image(request: web.Request) -> web.Response:
    snap = request.app[SESSION].snapshot(int(request.match_info["id"]))
    if snap is None:
        raise web.HTTPNotFound()
    if snap.png is None:
        snap.png = await asyncio.get_running_loop().run_in_executor(None, png_bytes, snap.pixels.clamp(0, 1))
    return web.Response(body=snap.png, content_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


# --- the API ----------------------------------------------------------------------------------------------------

async def body(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="expected application/json")
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="invalid JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


def text_of(data: dict) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise web.HTTPBadRequest(text="expected 'text'")
    return text


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def call(fn, *args) -> web.Response:
    """Run a session command in a thread; errors become {ok: false, error: {...}}."""
    from ..config.errors import ConfigError
    from ..config.expressions import ExpressionError
    from ..critic.weights import ModelError
    try:
        result = await in_thread(fn, *args)
    except (ConfigError, ExpressionError, ModelError, Refused, OSError) as e:
        return web.json_response({"ok": False, "error": error_info(e)})
    return web.json_response({"ok": True, **(result or {})})


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[SESSION].state())


async def validate(request: web.Request) -> web.Response:
    session, text = request.app[SESSION], text_of(await body(request))
    session.set_draft(text)

    def check():
        from ..config.loader import load_data
        from ..config.schema import validate
        data = None
        try:
            data = load_data(texts=[text])
            validate(data)
        except Exception as e:  # noqa: BLE001 - a broken config must never break the page
            return {"valid": False, "error": error_info(e, data)}
        return {"valid": True, "error": None}

    return web.json_response({"ok": True, **await in_thread(check)})


async def start(request: web.Request) -> web.Response:
    return await call(request.app[SESSION].start, text_of(await body(request)))


async def stop(request: web.Request) -> web.Response:
    await body(request)
    return await call(request.app[SESSION].stop)


async def reset(request: web.Request) -> web.Response:
    return await call(request.app[SESSION].reset, text_of(await body(request)))


async def restore(request: web.Request) -> web.Response:
    session, snapshot_id = request.app[SESSION], int(request.match_info["id"])
    await body(request)
    return await call(lambda: {"epoch": session.restore(snapshot_id)})


async def save_image(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    await body(request)

    def save():
        path, sidecar = session.save_image()
        return {"path": str(path), "sidecar": str(sidecar) if sidecar else None}

    return await call(save)


def config_path(session: Session, given, png: bool = False) -> Path:
    """The path to save/load a config: the one typed, else the file from the command line (`png`: a PNG
    written by CLIPig, whose recorded config is loaded, is fine too)."""
    if given is not None and not isinstance(given, str):
        raise Refused("expected a file name")
    text = (given or "").strip()
    if not text:
        if session.file is None:
            raise Refused("type a file name to save to (ending with .yaml)")
        return session.file
    path = Path(os.path.expanduser(text))
    if path.suffix.lower() not in (".yaml", ".yml", *((".png",) if png else ())):
        raise Refused("config files must end with .yaml or .yml" + (" (or .png, for the config of an image "
                                                                    "CLIPig made)" if png else ""))
    return path


async def save_config(request: web.Request) -> web.Response:
    session, data = request.app[SESSION], await body(request)
    text = text_of(data)

    def save():
        path = config_path(session, data.get("path"))
        same = session.file is not None and path.resolve() == session.file.resolve()
        if path.exists() and not same and not data.get("overwrite"):
            return {"exists": True, "path": str(path)}
        from ..files.output import atomic_write
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
        with session.lock:
            session.file, session.draft, session.saved_text = path, text, text
            session.changed()
        return {"path": str(path)}

    return await call(save)


async def load_config(request: web.Request) -> web.Response:
    session, data = request.app[SESSION], await body(request)

    def load():
        path = config_path(session, data.get("path"), png=True)
        if path.suffix.lower() == ".png":
            return {"path": "", "text": png_config(path, str(path)), "image": str(path)}
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise Refused(f"{path}: file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise Refused(f"{path}: cannot read the file ({type(e).__name__})") from None
        with session.lock:
            session.file, session.draft, session.saved_text = path, text, text
            session.changed()
        return {"path": str(path), "text": text}

    return await call(load)


def png_config(file, name: str) -> str:
    """The config recorded in a PNG that CLIPig wrote; Refused with the reason otherwise."""
    from ..config.errors import ConfigError
    from ..config.recorded import read
    try:
        return read(file, name)["config"]
    except ConfigError as e:
        raise Refused(str(e)) from None


async def dropped_png(request: web.Request) -> web.Response:
    """The config of a PNG dropped on the page (its bytes are the request body)."""
    data = await request.read()
    name = request.query.get("name") or "the dropped image"
    return await call(lambda: {"text": png_config(io.BytesIO(data), name)})


async def snapshots_video(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    try:
        data = await in_thread(session.snapshots_video)
    except Refused as e:
        raise web.HTTPNotFound(text=str(e)) from None
    return web.Response(body=data, content_type="video/mp4",
                        headers={"Content-Disposition": 'attachment; filename="clipig-snapshots.mp4"'})


# --- live updates -----------------------------------------------------------------------------------------------

async def websocket(request: web.Request) -> web.WebSocketResponse:
    session, sockets = request.app[SESSION], request.app[SOCKETS]
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    with session.lock:
        session.clients += 1
    sockets[ws] = {"history": None, "version": -1, "frame": -1}
    try:
        await ws.send_json({"type": "hello", "draft": session.draft, "saved": session.saved_text,
                           "file": str(session.file) if session.file else None})
        await push(ws, request.app, sockets[ws], frame=True)
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
    finally:
        sockets.pop(ws, None)
        with session.lock:
            session.clients -= 1
    return ws


async def frame_png(app: web.Application) -> tuple[int, bytes | None]:
    """The current image as PNG, encoded once per new image (in a server thread, never the training one)."""
    version, frame = app[SESSION].current_image()
    cache = app[FRAME]
    if frame is not None and cache.get("version") != version:
        cache.update(version=version, png=await in_thread(png_bytes, frame))
    return version, cache.get("png") if frame is not None else None


async def push(ws: web.WebSocketResponse, app: web.Application, seen: dict, frame: bool) -> None:
    """Send one page what changed since the last push: state, and the image if `frame`."""
    session = app[SESSION]
    if session.version != seen["version"]:
        seen["version"] = session.version
        message = session.state(seen["history"])
        history = message["history"]
        seen["history"] = (history["generation"], history["from"] + len(history["points"]))
        await ws.send_str(json.dumps(message))
    if frame and session.frame_version != seen["frame"]:
        seen["frame"], png = await frame_png(app)
        if png is not None:
            await ws.send_bytes(png)


async def pusher(app: web.Application) -> None:
    """Every PUSH_SECONDS: changed state to every page; a changed image at most every FRAME_SECONDS."""
    session, sockets = app[SESSION], app[SOCKETS]
    loop = asyncio.get_running_loop()
    last_frame = 0.0
    while True:
        await asyncio.sleep(PUSH_SECONDS)
        frame = loop.time() - last_frame >= FRAME_SECONDS
        if frame and any(seen["frame"] != session.frame_version for seen in sockets.values()):
            last_frame = loop.time()
        for ws, seen in list(sockets.items()):
            try:
                await push(ws, app, seen, frame)
            except (ConnectionError, RuntimeError):
                sockets.pop(ws, None)


# --- the application --------------------------------------------------------------------------------------------

def make_app(session: Session, token: str, host: str = "127.0.0.1", port: int | None = None) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 2**20)
    app[TOKEN], app[SESSION], app[BIND] = token, session, {"host": host, "port": port}
    app[SOCKETS], app[FRAME] = {}, {}
    app.add_routes([
        web.get("/", index),
        web.get("/static/{name}", static),
        web.get("/ws", websocket),
        web.get("/api/state", state),
        web.get("/api/image.png", image),
        web.get(r"/api/snapshot/{id:\d+}.png", snapshot_image),
        web.post(r"/api/snapshot/{id:\d+}/restore", restore),
        web.post("/api/validate", validate),
        web.post("/api/start", start),
        web.post("/api/stop", stop),
        web.post("/api/reset", reset),
        web.post("/api/save-image", save_image),
        web.post("/api/config/save", save_config),
        web.post("/api/config/load", load_config),
        web.post("/api/config/from-png", dropped_png),
        web.get("/api/snapshots.mp4", snapshots_video),
    ])

    async def background(app):
        app[PUSHER] = asyncio.create_task(pusher(app))
        yield
        app[PUSHER].cancel()
        for ws in list(app[SOCKETS]):
            await ws.close()
        await in_thread(session.shutdown)

    app.cleanup_ctx.append(background)
    return app
