"""Safe by default: bearer tokens, server paths only under the allowed roots, size and time limits, CORS off
unless asked for, and malformed HTTP answered by the stack (a real uvicorn server, raw sockets)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from alignsam.errors import ConfigError
from alignsam.serve import Service
from alignsam.serve.app import TimeLimit, create_app
from tests.serve.conftest import b64, png_bytes, running_server, scene


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("paths")
    allowed, outside = base / "allowed", base / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "sub").mkdir()
    image = png_bytes(scene(300).image)
    (allowed / "sub" / "in.png").write_bytes(image)
    (outside / "out.png").write_bytes(image)
    os.symlink(outside / "out.png", allowed / "link.png")  # a link inside the root to a file outside
    os.symlink(outside, allowed / "linked-folder")
    return {"allowed": allowed, "outside": outside}


def test_tokens(roots: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    with Service("demo", "demo", token="s3cret") as service, TestClient(create_app(service)) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200  # the page itself, so that it can ask for the token
        body = {"texts": ["a red star"]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
            response = c.post("/embed", json=body, headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in response.json()["error"]
        assert c.get("/images/x").status_code == 401 and c.get("/thumbnail?path=x").status_code == 401
        assert c.post("/embed", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        schema = c.get("/openapi.json").json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from alignsam.serve import ServeConfig

    monkeypatch.setenv("ALIGNSAM_TOKEN", "  from-env ")
    assert ServeConfig.token_from_env() == "from-env"
    monkeypatch.setenv("ALIGNSAM_TOKEN", "")
    assert ServeConfig.token_from_env() is None
    with pytest.raises(ConfigError, match="token is empty"):
        ServeConfig(token=" ")


def test_paths_only_under_the_roots(roots: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    allowed, outside = roots["allowed"], roots["outside"]
    with Service("demo", "demo", allow_paths=(allowed,)) as service, TestClient(create_app(service)) as c:

        def classify(ref: str) -> Any:
            return c.post("/classify", json={"images": [ref], "labels": ["red star", "blue circle"]})

        for ref in (str(allowed / "sub" / "in.png"), "sub/in.png", f"path:{allowed / 'sub' / 'in.png'}"):
            answer = classify(ref)
            assert answer.status_code == 200 and answer.json()["num_images"] == 1, (ref, answer.text)
        refused = {
            "/etc/passwd": "outside the folders",
            str(outside / "out.png"): "outside the folders",
            str(allowed / "link.png"): "outside the folders",  # a symbolic link out of the root
            str(allowed / "linked-folder" / "out.png"): "outside the folders",
            str(allowed / ".." / "outside" / "out.png"): "'..' part",
            "sub/../../outside/out.png": "'..' part",
            "path:/etc/shadow": "outside the folders",
            str(allowed / "missing.png"): "not a file",
            str(allowed / "sub"): "not a file",
        }
        for ref, message in refused.items():
            answer = classify(ref)
            assert answer.status_code == 400 and message in answer.json()["error"], (ref, answer.text)
        assert c.post("/similarity", json={"rows": [f"image:{outside / 'out.png'}"], "cols": ["x"]}).status_code == 400
        sim = c.post("/similarity", json={"rows": [str(allowed / "sub" / "in.png")], "cols": ["x"]}).json()
        assert sim["rows"] == [str((allowed / "sub" / "in.png").resolve())]  # an allowed path is an image
        assert c.post("/images", json={"image": "/etc/passwd"}).status_code == 400
    with pytest.raises(ConfigError, match="not a folder"):
        Service("demo", "demo", allow_paths=(allowed / "sub" / "in.png",))
    with pytest.raises(ConfigError, match="root folders"):
        Service("demo", "demo", allow_paths=True)  # the old flag: every readable file


def test_without_roots_no_path_is_read(client: Any) -> None:
    answer = client.post("/classify", json={"images": ["/etc/passwd"], "labels": ["a"]})
    assert answer.status_code == 400 and "not allowed" in answer.json()["error"]
    answer = client.post("/classify", json={"images": ["path:/etc/passwd"], "labels": ["a"]})
    assert answer.status_code == 400 and "--allow-paths" in answer.json()["error"]


def test_cors_is_off_unless_asked_for() -> None:
    from fastapi.testclient import TestClient

    preflight = {"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST"}
    with Service("demo", "demo") as service, TestClient(create_app(service)) as c:
        assert (
            "access-control-allow-origin" not in c.get("/health", headers={"Origin": "http://elsewhere.test"}).headers
        )
        assert "access-control-allow-origin" not in c.options("/embed", headers=preflight).headers
    with Service("demo", "demo", cors=("http://elsewhere.test",)) as service, TestClient(create_app(service)) as c:
        response = c.options("/embed", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://elsewhere.test"
        other = c.options("/embed", headers={**preflight, "Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_time_limit_answers_504_and_cancels() -> None:
    cancelled = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        await TimeLimit(slow, 0.05)({"type": "http"}, None, send)  # type: ignore[arg-type]

    asyncio.run(main())
    assert cancelled == [True] and sent[0]["status"] == 504 and b"longer than 0.05 s" in sent[1]["body"]


def raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_the_real_server(demo_service: Service) -> None:
    """uvicorn on a free port: malformed HTTP answered by the stack, the size limit over the wire, uploads."""
    with running_server(demo_service) as url:
        port = int(url.rsplit(":", 1)[1])
        for length in (b"-1", b"abc", b"1e3", b"99999999999999999999999"):
            answer = raw(port, b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                         + length + b"\r\n\r\n{}")  # fmt: skip
            assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.1 413"), (length, answer[:200])
        garbage = raw(port, b"\x16\x03\x01 not http at all\r\n\r\n")
        assert garbage == b"" or garbage.startswith(b"HTTP/1.1 400")
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.get("/health").json()["status"] == "ok"  # still serving
            image = png_bytes(scene(301).image)
            info = http.post("/images", files={"file": ("s.png", image, "image/png")}).json()
            assert info["width"] == 128
            answer = http.post("/embed", json={"texts": ["a red star"]})
            assert answer.status_code == 200
    with Service("demo", "demo", max_body=10_000) as small, running_server(small) as url:
        port = int(url.rsplit(":", 1)[1])
        with httpx.Client(base_url=url, timeout=60) as http:
            big = http.post("/classify", json={"images": [b64(b"x" * 20_000)], "labels": ["a"]})
            assert big.status_code == 413 and "over the limit" in big.json()["error"]
            assert http.get("/health").status_code == 200
        chunks = (b"2710\r\n" + b"x" * 10000 + b"\r\n") * 3 + b"0\r\n\r\n"
        head = (
            b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunked = raw(port, head + chunks)
        assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]


def test_the_listening_socket_says_it_is_tcp() -> None:
    """asyncio turns Nagle's algorithm off only on sockets created with IPPROTO_TCP; without it each answer
    on a kept-alive connection waited for the client's delayed ACK (a click took 13 ms instead of 55)."""
    from alignsam.serve.app import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_the_command_binds_to_localhost_and_needs_a_token(tmp_path: Path) -> None:
    env = {**os.environ, "ALIGNSAM_TOKEN": "from-env", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignsam", "serve", "--model", "demo", "--sam-model", "demo", "--port", "0"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on http://127.0.0.1:" in line and "bearer token required" in line, line
        url = line.split("listening on ")[1].split("/;")[0].split(" ")[0].rstrip("/")
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(url + "/health", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        assert httpx.post(url + "/embed", json={"texts": ["x"]}).status_code == 401
        good = httpx.post(url + "/embed", json={"texts": ["x"]}, headers={"Authorization": "Bearer from-env"})
        assert good.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
