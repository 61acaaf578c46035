"""Run by test_serving inside a loopback-only network namespace: starts `cp-dist serve`, waits until
it is ready, sends the test's requests (in order, then a group at once), stops the server with
SIGINT, and writes what it saw as JSON.

    python tests/serving/endpoint_probe.py CASES.json OUT.json -- cp-dist serve RUN --data DIR ...
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def send(url: str, case: dict) -> dict:
    body = case.get("raw", "").encode() if "raw" in case else json.dumps(case["body"]).encode() if "body" in case else None
    request = urllib.request.Request(url + case["path"], data=body, method=case["method"])
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    try:
        return {"status": status, "json": json.loads(text)}
    except json.JSONDecodeError:  # Serve's proxy before the app is up, or a bug: kept as text
        return {"status": status, "text": text.decode(errors="replace")}


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of sockets listening on the port."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return [row[1].split(":")[0] for row in rows if row[3] == "0A" and int(row[1].split(":")[1], 16) == port]


def main() -> int:
    cases_file, out_file, _, *server_command = sys.argv[1:]
    cases = json.loads(Path(cases_file).read_text())
    port = int(server_command[server_command.index("--port") + 1])
    url = f"http://127.0.0.1:{port}"
    log = open(Path(out_file).with_suffix(".log"), "w")  # noqa: SIM115 (open while the server runs)
    server = subprocess.Popen(server_command, stdout=log, stderr=subprocess.STDOUT)
    seen: dict = {"ready": None}
    try:
        probe(url, port, server, cases, seen)
    finally:  # whatever happened, the server goes (SIGINT, as a user's Ctrl-C), and what was seen is kept
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
        seen["exit_code"] = server.wait()
        Path(out_file).write_text(json.dumps(seen))
    return 0


def probe(url: str, port: int, server: subprocess.Popen, cases: dict, seen: dict) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            seen["ready"] = send(url, {"method": "GET", "path": "/ready"})
            if seen["ready"]["status"] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)
    if seen["ready"] is None or seen["ready"]["status"] != 200:
        return
    seen["listening"] = listening_addresses(port)
    seen["sequential"] = [send(url, case) for case in cases["sequential"]]
    with ThreadPoolExecutor(len(cases["concurrent"])) as pool:
        seen["concurrent"] = list(pool.map(lambda case: send(url, case), cases["concurrent"]))
    seen["after"] = send(url, {"method": "GET", "path": "/ready"})


if __name__ == "__main__":
    sys.exit(main())
