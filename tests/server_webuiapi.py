"""`sdxl serve` driven by the real A1111 client library, `webuiapi` (pinned to 0.9.17).

Run through tests/server_webuiapi.sh, which makes a throwaway venv with webuiapi and builds the
release binary. Starts `sdxl serve --model tiny-sdxl` on a free loopback port, runs each check,
prints `ok NAME` or `FAIL NAME: why`, then `N passed, N failed`, and exits non-zero on a failure.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

import webuiapi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DIR = os.path.join(ROOT, "tests", "fixtures", "tiny-sdxl")
SMALL = dict(width=64, height=64, cfg_scale=5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """An `sdxl serve` process on a free port; stopped with SIGTERM."""

    def __init__(self, binary, *extra):
        self.port = free_port()
        self.log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sdxl-serve-{self.port}.log"), "w+")
        self.process = subprocess.Popen(
            [binary, "serve", "--model", "tiny-sdxl", "--device", "cpu", "--port", str(self.port), *extra],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sdxl serve exited with {self.process.returncode}: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sdxl serve did not listen within 60 s")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM; returns the exit code (None if it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def wait_until_running(api, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if api.get_progress()["state"]["sampling_step"] >= 1:
            return
        time.sleep(0.02)
    raise AssertionError("no job started")


def test_txt2img(api, server):
    result = api.txt2img(prompt="a photo of a cat", seed=42, steps=4, sampler_name="DPM++ 2M", scheduler="Karras", batch_size=2, **SMALL)
    check(len(result.images) == 2, f"{len(result.images)} images")
    check(result.image.size == (64, 64), result.image.size)
    check(result.info["all_seeds"] == [42, 43], result.info["all_seeds"])
    check(result.info["sampler_name"] == "DPM++ 2M", result.info["sampler_name"])
    text = result.images[1].info.get("parameters", "")
    check("Seed: 43," in text and "Schedule type: Karras" in text, text)
    check(result.parameters["steps"] == 4, result.parameters)


def test_legacy_sampler_name(api, server):
    result = api.txt2img(prompt="x", seed=1, steps=3, sampler_name="DPM++ 2M Karras", **SMALL)
    check(result.info["sampler_name"] == "DPM++ 2M Karras", result.info["sampler_name"])


def test_img2img(api, server):
    source = api.txt2img(prompt="a red cube", seed=3, steps=4, **SMALL).image
    result = api.img2img(images=[source], prompt="a blue cube", seed=4, steps=10, denoising_strength=0.5, **SMALL)
    check(result.image.size == (64, 64), result.image.size)
    check("Denoising strength: 0.5" in result.image.info["parameters"], result.image.info)


def test_listings(api, server):
    samplers = api.util_get_sampler_names()
    check({"Euler a", "DPM++ 2M", "DPM++ SDE", "UniPC"} <= set(samplers), samplers)
    schedulers = api.util_get_scheduler_names()
    check({"karras", "exponential", "sgm_uniform"} <= set(schedulers), schedulers)
    models = api.util_get_model_names()
    check("tiny-sdxl" in models, models)
    memory = api.get_memory()
    check(memory["ram"]["used"] > 0, memory)


def test_options_switch(api, server):
    check(api.util_get_current_model() == "tiny-sdxl", api.get_options())
    api.set_options({"sd_model_checkpoint": TINY_DIR})
    check(api.util_get_current_model() == TINY_DIR, api.get_options())
    result = api.txt2img(prompt="x", steps=2, **SMALL)
    check(result.info["sd_model_name"] == TINY_DIR, result.info["sd_model_name"])
    api.util_set_model("tiny-sdxl")
    check(api.util_get_current_model() == "tiny-sdxl", api.get_options())


def test_interrupt(api, server):
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("result", api.txt2img(prompt="x", steps=20, width=256, height=256)))
    worker.start()
    wait_until_running(api)
    check(api.get_progress()["state"]["job"] == "txt2img", api.get_progress())
    api.interrupt()
    worker.join(60)
    result = outcome["result"]
    check(result.images == [] and result.info["interrupted"] is True, result.info)
    check(len(api.txt2img(prompt="after", steps=2, **SMALL).images) == 1, "no image after the interrupt")


def test_unload_then_generate(api, server):
    response = api.session.post(f"{api.baseurl}/unload-checkpoint")
    check(response.status_code == 200, response.text)
    result = api.txt2img(prompt="x", steps=2, **SMALL)
    check(result.info["sd_model_name"] == "tiny-sdxl", result.info)
    response = api.session.post(f"{api.baseurl}/reload-checkpoint")
    check(response.status_code == 200, response.text)


def test_bad_field(api, server):
    try:
        api.txt2img(prompt="x", steps=2, sampler_name="No Such Sampler", **SMALL)
    except RuntimeError as error:
        status, body = error.args
        check(status == 422 and "sampler_name" in body, error.args)
    else:
        raise AssertionError("an unknown sampler was accepted")


def test_auth(api, server):
    secured = Served(server.binary, "--api-auth", "user:secret")
    try:
        good = webuiapi.WebUIApi(port=secured.port, username="user", password="secret")
        check(len(good.txt2img(prompt="x", steps=2, **SMALL).images) == 1, "no image")
        bad = webuiapi.WebUIApi(port=secured.port, username="user", password="wrong")
        try:
            bad.txt2img(prompt="x", steps=2, **SMALL)
        except RuntimeError as error:
            check(error.args[0] == 401, error.args)
        else:
            raise AssertionError("wrong credentials were accepted")
    finally:
        secured.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sdxl"))
    args = parser.parse_args()
    try:
        server = Served(args.binary)
    except Exception as error:  # noqa: BLE001 - reported like a failed check
        print(f"FAIL start: {error!r}")
        print("0 passed, 1 failed")
        return 1
    server.binary = args.binary
    api = webuiapi.WebUIApi(port=server.port)
    tests = [test_txt2img, test_legacy_sampler_name, test_img2img, test_listings, test_options_switch,
             test_interrupt, test_unload_then_generate, test_bad_field, test_auth]
    passed = failed = 0
    try:
        for test in tests:
            started = time.time()
            try:
                test(api, server)
                passed += 1
                print(f"ok {test.__name__} ({time.time() - started:.1f} s)", flush=True)
            except Exception as error:  # noqa: BLE001 - every failure is reported, then counted
                failed += 1
                print(f"FAIL {test.__name__}: {error!r}", flush=True)
                traceback.print_exc()
        # Graceful shutdown: SIGTERM during a job cancels it and the process exits 0.
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.setdefault("result", api.txt2img(prompt="x", steps=20, width=256, height=256)))
        worker.start()
        wait_until_running(api)
        code = server.stop()
        worker.join(60)
        if code == 0 and outcome.get("result") is not None and outcome["result"].info["interrupted"]:
            passed += 1
            print("ok sigterm_cancels_and_exits", flush=True)
        else:
            failed += 1
            print(f"FAIL sigterm_cancels_and_exits: exit code {code}, {outcome}", flush=True)
    finally:
        server.stop()
        if failed:
            print(server.output(), file=sys.stderr)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
