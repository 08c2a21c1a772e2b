"""Load: the real server (`alignsam serve` in a child process, demo models) under 50 concurrent clients
sending mixed requests for 60 s (`ALIGNSAM_LOAD_SECONDS` to change it; each client also stops after 5,000
requests), while one client trickles its body a byte at a time.

Passes when every request is answered (0 lost), none with an error, the server's resident memory stays
bounded (its caches are bounded in bytes: the last third of the run holds no more than the first third plus
a margin), and the slow client does not hold up the others.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import SCENES, b64, inside_point, png_bytes, scene

pytestmark = [pytest.mark.load, pytest.mark.slow]
CLIENTS = 50
SECONDS = float(os.environ.get("ALIGNSAM_LOAD_SECONDS", "60"))
MAX_PER_CLIENT = 5000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server(scene_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from alignsam.tools import Encoder
    from alignsam.tools.embed import export_embeddings

    index = tmp_path_factory.mktemp("load-index")
    export_embeddings(Encoder.from_pretrained("demo"), index, images=sorted(scene_files.glob("*.png")))
    command = [sys.executable, "-m", "alignsam", "serve", "--model", "demo", "--sam-model", "demo", "--port", "0",
               "--index", str(index), "--cache-mb", "4", "--sessions-mb", "16", "--timeout", "120"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    url = line.split("listening on ")[1].split(";")[0].rstrip("/")
    for _ in range(300):
        try:
            httpx.get(url + "/health", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def test_fifty_clients_for_a_minute(server: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = server
    classes = list(SCENES.classes)
    images = [png_bytes(scene(i).image) for i in range(400, 408)]
    encoded = [b64(x) for x in images]
    sessions = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for k, data in enumerate(images[:4]):
            sessions.append(http.post("/images", files={"file": (f"{k}.png", data, "image/png")}).json()["id"])
        while any(http.get(f"/images/{s}").json()["status"] != "ready" for s in sessions):
            time.sleep(0.05)
    points = [inside_point(scene(400 + k).objects[0].mask) for k in range(4)]

    def request(http: httpx.Client, rng: random.Random) -> tuple[str, httpx.Response]:
        kind = rng.choice(["classify", "classify", "embed", "similarity", "tag", "click", "click", "click",
                           "health", "search", "upload", "info"])  # fmt: skip
        k = rng.randrange(4)
        if kind == "classify":
            body = {"images": [rng.choice(encoded)], "labels": classes[: rng.choice([8, 16, 64])], "top_k": 3}
            return kind, http.post("/classify", json=body)
        if kind == "embed":
            return kind, http.post("/embed", json={"texts": [rng.choice(classes), "a photo of shapes"]})
        if kind == "similarity":
            return kind, http.post("/similarity", json={"rows": [rng.choice(encoded)], "cols": classes[:8]})
        if kind == "tag":
            return kind, http.post("/tag", json={"images": [rng.choice(encoded)], "vocab": classes, "max_tags": 3})
        if kind == "click":
            x, y = points[k]
            body = {
                "points": [[x + rng.uniform(-2, 2), y + rng.uniform(-2, 2), 1]],
                "output": ["png"],
                "max_candidates": 1,
            }
            return kind, http.post(f"/images/{sessions[k]}/segment", json=body)
        if kind == "search":
            return kind, http.post("/search", json={"text": rng.choice(classes), "k": 5})
        if kind == "upload":  # new bytes each time: sessions and embeddings come and go within their budgets
            noisy = bytearray(scene(400 + rng.randrange(8)).image.tobytes())
            noisy[rng.randrange(len(noisy))] ^= 1
            image = png_bytes(__import__("numpy").frombuffer(bytes(noisy), "uint8").reshape(128, 128, 3))
            return kind, http.post("/images", files={"file": ("n.png", image, "image/png")})
        if kind == "info":
            return kind, http.get(f"/images/{sessions[k]}")
        return kind, http.get("/health")

    sent = Counter[str]()
    answered = Counter[str]()
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=120) as http:
            for _ in range(MAX_PER_CLIENT):
                if time.monotonic() > deadline:
                    return
                with lock:
                    sent["all"] += 1
                try:
                    kind, response = request(http, rng)
                except httpx.HTTPError as err:
                    with lock:
                        errors.append(f"{type(err).__name__}: {err}")
                    continue
                with lock:
                    answered[kind] += 1
                    if response.status_code >= 400:
                        errors.append(f"{kind} {response.status_code} {response.text[:200]}")

    memory: list[tuple[float, float]] = []
    slow: dict[str, Any] = {}

    def watch() -> None:
        start = time.monotonic()
        while time.monotonic() < deadline:
            memory.append((time.monotonic() - start, rss_mb(proc.pid)))
            time.sleep(1)

    def trickle() -> None:  # a client sending its body one byte every 0.25 s, for about 10 s
        port = int(url.rsplit(":", 1)[1])
        body = b'{"texts": ["' + b"a" * 30 + b'"]}'
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")  # fmt: skip
            for byte in body:
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
            slow["answer"] = sock.recv(200)
        slow["seconds"] = time.monotonic() - start

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    helpers = [threading.Thread(target=watch), threading.Thread(target=trickle)]
    for t in threads + helpers:
        t.start()
    time.sleep(min(5.0, SECONDS / 4))
    during = []  # while the slow client is still sending
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(5):
            t0 = time.perf_counter()
            assert http.get("/health").status_code == 200
            during.append(time.perf_counter() - t0)
    for t in threads + helpers:
        t.join(timeout=SECONDS + 300)
    assert not any(t.is_alive() for t in threads), "a client never finished"
    total = sum(answered.values())
    print(f"\n{total} requests in {SECONDS:.0f} s ({total / SECONDS:.1f}/s): {dict(answered)}")
    print(f"server memory (MB): {[round(m) for _, m in memory]}")
    print(
        f"health while the slow client sent: {[round(d, 3) for d in during]} s; "
        f"slow client {slow.get('seconds', 0):.1f} s"
    )
    assert errors == [], errors[:10]
    assert total == sent["all"], (total, sent["all"])  # nothing lost
    assert total >= CLIENTS * 2 and set(answered) >= {"classify", "click", "upload", "search"}
    assert slow["answer"].startswith(b"HTTP/1.1 200"), slow
    assert max(during) < 10.0 and slow["seconds"] >= 5  # others were answered while it was still sending
    third = max(len(memory) // 3, 1)
    first, last = max(m for _, m in memory[:third]), max(m for _, m in memory[-third:])
    assert last <= first + 300, (first, last)
