#!/usr/bin/env python3
"""Bounded load test of `sdxl serve` on loopback (standard library only).

Starts `sdxl serve --model tiny-sdxl` on a free port (or uses --url), runs N client threads for
a fixed time, each sending A1111 txt2img / img2img requests back to back (a 503 is honoured:
the client sleeps for Retry-After), and prints requests served, latency percentiles, errors by
status, and the server's resident memory at the start, the end and its peak.

    python3 tools/loadtest/loadtest.py --clients 16 --seconds 60
"""

import argparse
import base64
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLERS = [("Euler a", None), ("DPM++ 2M", "Karras"), ("DPM++ 2M Karras", None), ("UniPC", None), ("Euler", "SGM Uniform")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def post(url, body, timeout=300):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), None
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Retry-After")


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--queue", type=int, default=8, help="the server's --queue")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sdxl"))
    parser.add_argument("--url", help="an already running server (no RSS readings)")
    args = parser.parse_args()

    process = None
    if args.url:
        base = args.url.rstrip("/") + "/sdapi/v1"
    else:
        port = free_port()
        process = subprocess.Popen(
            [args.binary, "serve", "--model", "tiny-sdxl", "--device", "cpu", "--port", str(port), "--queue", str(args.queue)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}/sdapi/v1"
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)

    # One warm-up request (the first run allocates ONNX Runtime's arenas), and an init image.
    status, body, _ = post(base + "/txt2img", {"prompt": "warm-up", "seed": 1, "steps": args.steps})
    if status != 200:
        sys.exit(f"warm-up failed: {status} {body[:200]!r}")
    init_image = json.loads(body)["images"][0]
    rss_start = rss_kib(process.pid) if process else None

    stop_at = time.time() + args.seconds
    lock = threading.Lock()
    latencies = []  # seconds, served requests
    statuses = collections.Counter()
    transport_errors = collections.Counter()
    rss_samples = []

    def client(index):
        rng = random.Random(index)
        while time.time() < stop_at:
            sampler, schedule = rng.choice(SAMPLERS)
            body = {"prompt": f"client {index} request", "seed": rng.randrange(2**32), "steps": args.steps,
                    "sampler_name": sampler, "scheduler": schedule or "Automatic"}
            path = "/txt2img"
            if rng.random() < 0.25:
                path = "/img2img"
                body.update(init_images=[init_image], denoising_strength=0.6)
            started = time.time()
            try:
                status, payload, retry_after = post(base + path, body)
            except Exception as error:  # noqa: BLE001 - counted, the run goes on
                with lock:
                    transport_errors[type(error).__name__] += 1
                time.sleep(0.1)
                continue
            elapsed = time.time() - started
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(elapsed)
            if status == 503:
                time.sleep(min(float(retry_after or 1), max(0.0, stop_at - time.time())))
            elif status == 200:
                images = json.loads(payload)["images"]
                assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"

    def sample_rss():
        while process and time.time() < stop_at:
            rss_samples.append(rss_kib(process.pid))
            time.sleep(1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    sampler_thread = threading.Thread(target=sample_rss)
    began = time.time()
    for thread in threads + [sampler_thread]:
        thread.start()
    for thread in threads + [sampler_thread]:
        thread.join()
    wall = time.time() - began

    rss_end = rss_kib(process.pid) if process else None
    rss_peak = rss_kib(process.pid, "VmHWM") if process else None
    shutdown_code = None
    if process:
        process.send_signal(signal.SIGTERM)
        shutdown_code = process.wait(timeout=30)

    served = statuses[200]
    report = {
        "clients": args.clients,
        "seconds": round(wall, 1),
        "queue": args.queue,
        "steps": args.steps,
        "served": served,
        "throughput_per_s": round(served / wall, 2),
        "latency_ms_p50": round(percentile(latencies, 50) * 1000, 1),
        "latency_ms_p99": round(percentile(latencies, 99) * 1000, 1),
        "latency_ms_max": round(max(latencies, default=float("nan")) * 1000, 1),
        "statuses": dict(sorted(statuses.items())),
        "transport_errors": dict(transport_errors),
        "rss_mib_start": rss_start and round(rss_start / 1024, 1),
        "rss_mib_end": rss_end and round(rss_end / 1024, 1),
        "rss_mib_every_10s": [round(kib / 1024, 1) for kib in rss_samples[::10]],
        "rss_mib_peak": rss_peak and round(rss_peak / 1024, 1),
        "server_exit_code_after_sigterm": shutdown_code,
    }
    print(json.dumps(report, indent=2))
    unexpected = {code: n for code, n in statuses.items() if code not in (200, 503)}
    return 1 if unexpected or transport_errors or served == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
