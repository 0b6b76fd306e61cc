"""A simulated camera: synthetic shop scenes as frames or as a video file OpenCV writes.

A textured still scene (shelves of boxes, a floor) with sensor noise, and what happens in it:
a person-sized figure walking across, a hand over the lens, a lens smeared out of focus, the
camera turned to another view. The tests and bench/camera.py read these; nothing here is
random without its seed, so a clip is the same every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from device_drivers.camera.frames import Image

Happening = Literal["covered", "defocused", "turned_away"]


def still_scene(width: int = 640, height: int = 480, *, seed: int = 1) -> Image:
    """A shop seen from the ceiling: shelves of coloured boxes over a tiled floor, with texture."""
    rng = np.random.default_rng(seed)
    scene = np.zeros((height, width, 3), np.uint8)
    scene[:] = (150, 160, 165)
    tile = max(8, width // 20)
    for y in range(height // 2, height, tile):
        cv2.line(scene, (0, y), (width, y), (120, 125, 130), 1)
    for x in range(0, width, tile):
        cv2.line(scene, (x, height // 2), (x, height), (120, 125, 130), 1)
    shelf_h = height // 8
    for row in range(3):
        top = shelf_h // 2 + row * shelf_h
        cv2.rectangle(scene, (0, top + shelf_h - 4), (width, top + shelf_h), (60, 60, 70), -1)
        x = 0
        while x < width:
            box_w = int(rng.integers(width // 40, width // 12))
            colour = tuple(int(c) for c in rng.integers(30, 230, 3))
            cv2.rectangle(
                scene, (x, top + int(rng.integers(0, shelf_h // 3))), (x + box_w - 2, top + shelf_h - 5), colour, -1
            )
            x += box_w
    grain = rng.normal(0, 6, (height, width, 1))
    return np.clip(scene + grain, 0, 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class Walker:
    """A person-sized figure walking in a straight line from ``start`` to ``end`` over frames [first, last]."""

    first: int
    last: int
    start: tuple[int, int]
    end: tuple[int, int]
    size: tuple[int, int] = (60, 170)  # width, height in full-frame pixels (a person at 4 m, 640x480)

    def centre(self, index: int) -> tuple[int, int] | None:
        """The figure's centre at frame ``index``, or None when it is not in the clip then."""
        if not self.first <= index <= self.last:
            return None
        share = (index - self.first) / max(1, self.last - self.first)
        x = self.start[0] + share * (self.end[0] - self.start[0])
        y = self.start[1] + share * (self.end[1] - self.start[1])
        return round(x), round(y)


@dataclass(slots=True)
class Clip:
    """A synthetic clip: the scene, who walks through it, and the tampering with frame ranges."""

    width: int = 640
    height: int = 480
    frames: int = 60
    fps: float = 15.0
    seed: int = 1
    noise: float = 3.0  # sensor noise, standard deviation in grey levels
    walkers: list[Walker] = field(default_factory=list)
    happenings: list[tuple[Happening, int, int]] = field(default_factory=list)  # (what, first, last frame)
    faces: list[tuple[int, int, int]] = field(default_factory=list)  # (x, y, size) of face-like drawings

    def __iter__(self) -> Iterator[Image]:
        rng = np.random.default_rng(self.seed + 1000)
        scene = still_scene(self.width, self.height, seed=self.seed)
        for x, y, size in self.faces:
            draw_face(scene, (x, y), size)
        other = still_scene(self.width, self.height, seed=self.seed + 7)[::-1, ::-1].copy()
        noise_bank = [rng.normal(0, self.noise, (self.height, self.width, 1)).astype(np.int16) for _ in range(8)]
        for index in range(self.frames):
            happening = next((what for what, a, b in self.happenings if a <= index <= b), None)
            frame = (other if happening == "turned_away" else scene).copy()
            for walker in self.walkers:
                centre = walker.centre(index)
                if centre is not None:
                    draw_person(frame, centre, walker.size)
            if happening == "covered":
                frame[:] = (8, 8, 10)
            elif happening == "defocused":
                frame = cv2.GaussianBlur(frame, (0, 0), 9)
            noise = noise_bank[index % len(noise_bank)]
            shift = int(rng.integers(0, self.width))
            yield np.clip(frame + np.roll(noise, shift, axis=1), 0, 255).astype(np.uint8)

    def write(self, path: Path) -> Path:
        """Write the clip as an MJPG AVI (any OpenCV build writes it, headless included); returns ``path``."""
        write_video(path, self, fps=self.fps, size=(self.width, self.height))
        return path


def draw_person(frame: Image, centre: tuple[int, int], size: tuple[int, int]) -> None:
    """A figure from above and at an angle: dark clothes, a lighter head."""
    x, y = centre
    w, h = size
    cv2.rectangle(frame, (x - w // 2, y - h // 2 + w // 2), (x + w // 2, y + h // 2), (45, 35, 80), -1)
    cv2.circle(frame, (x, y - h // 2 + w // 4), w // 3, (140, 170, 200), -1)


def draw_face(frame: Image, centre: tuple[int, int], size: int) -> None:
    """A face-like drawing OpenCV's frontal-face cascade finds: an oval, brows, eyes, nose and mouth."""
    cx, cy = centre
    patch: Image = np.full((size * 2, size * 2), 90, np.uint8)
    c = size
    cv2.ellipse(patch, (c, c), (int(size * 0.42), int(size * 0.55)), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        ex = c + side * int(size * 0.17)
        cv2.ellipse(patch, (ex, c - int(size * 0.15)), (int(size * 0.1), int(size * 0.045)), 0, 0, 360, 40, -1)
        brow_y = c - int(size * 0.27)
        cv2.line(patch, (ex - int(size * 0.12), brow_y), (ex + int(size * 0.12), brow_y), 60, max(2, size // 25))
    cv2.line(patch, (c, c - int(size * 0.08)), (c, c + int(size * 0.12)), 150, max(2, size // 30))
    cv2.ellipse(patch, (c, c + int(size * 0.13)), (int(size * 0.07), int(size * 0.03)), 0, 0, 360, 120, -1)
    cv2.ellipse(patch, (c, c + int(size * 0.3)), (int(size * 0.16), int(size * 0.05)), 0, 0, 360, 70, -1)
    patch = cv2.GaussianBlur(patch, (0, 0), size / 60)
    top, left = cy - size, cx - size
    frame[top : top + 2 * size, left : left + 2 * size] = cv2.cvtColor(patch, cv2.COLOR_GRAY2BGR)


def write_video(path: Path, frames: Iterable[Image], *, fps: float, size: tuple[int, int]) -> None:
    """Write BGR ``frames`` of ``size`` (width, height) to ``path`` as MJPG in AVI."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


class MjpegServer:
    """A network camera's HTTP MJPEG stream (multipart/x-mixed-replace) of a clip, looped, on loopback.

    ``stall()`` keeps the connection open but sends nothing more (a camera that froze), ``resume()``
    sends again, ``close()`` stops serving (a camera unplugged from the network).
    """

    def __init__(self, clip: Clip, *, host: str = "127.0.0.1") -> None:
        import http.server
        import threading

        self.frames = [cv2.imencode(".jpg", frame)[1].tobytes() for frame in clip]
        self.fps = clip.fps
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self.served = 0
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # the tests' output stays readable

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                index = 0
                while not server_self.closing.is_set():
                    if server_self.stalled.is_set():
                        server_self.closing.wait(0.05)
                        continue
                    jpeg = server_self.frames[index % len(server_self.frames)]
                    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    try:
                        self.wfile.write(head.encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return  # the reader went away
                    server_self.served += 1
                    index += 1
                    server_self.closing.wait(1 / server_self.fps)

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/video.mjpg"
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg server", daemon=True)
        self._thread.start()

    def stall(self) -> None:
        """Stop sending frames, the connection kept open."""
        self.stalled.set()

    def resume(self) -> None:
        """Send frames again."""
        self.stalled.clear()

    def close(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        if self.closing.is_set():
            return
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
