"""``/static/...``: the console's scripts, styles and sounds, served from the package, never from the network.

The vendored libraries (htmx and its server-sent-events extension, uPlot) sit under ``static/vendor`` with their
licences and the versions in ``static/vendor/README.md``. Every file is read once, compressed once, and served with
a long cache lifetime: its URL carries a hash of its content (:func:`asset_url`), so a new release is a new URL
and a browser never runs an old script against a new page.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from typing import Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

router = APIRouter(tags=["dashboard"])

# The Content-Security-Policy of the console's pages: scripts, styles, images and the live stream from the hub
# itself; nothing inline, nothing from elsewhere.
CONSOLE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "media-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# A year: the URL changes when the content does.
CACHE_CONTROL: Final = "public, max-age=31536000, immutable"
_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".wav": "audio/wav",
    ".png": "image/png",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file: its bytes, compressed bytes, type and version."""

    body: bytes
    gzipped: bytes
    media_type: str
    version: str


@functools.cache
def _assets() -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    root = resources.files("hub.console") / "static"

    def walk(folder: resources.abc.Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            name = f"{prefix}{entry.name}"
            if entry.is_dir():
                walk(entry, f"{name}/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            media_type = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            body = entry.read_bytes()
            found[name] = Asset(
                body=body,
                gzipped=gzip.compress(body, compresslevel=9, mtime=0),
                media_type=media_type,
                version=hashlib.sha256(body).hexdigest()[:12],
            )

    walk(root, "")
    return found


def asset_url(name: str) -> str:
    """The URL of a static file, with its version: ``/static/console.css?v=…``."""
    asset = _assets().get(name)
    if asset is None:
        raise KeyError(f"no static file {name!r} in hub/console/static")
    return f"/static/{name}?v={asset.version}"


@router.get(
    "/static/{name:path}",
    summary="A static file of the console",
    description="Scripts, styles and sounds of the console pages, compressed when the browser accepts it.",
    include_in_schema=False,
)
async def get_static(request: Request, name: str) -> Response:
    """The file, gzipped when accepted; 404 for a name the package does not ship."""
    asset = _assets().get(name)
    if asset is None:
        raise HTTPException(status_code=404, detail="no such file")
    headers = {"cache-control": CACHE_CONTROL, "etag": f'"{asset.version}"', "vary": "accept-encoding"}
    if request.headers.get("if-none-match") == f'"{asset.version}"':
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "") and len(asset.gzipped) < len(asset.body):
        return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "content-encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)
