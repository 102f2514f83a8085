#!/usr/bin/env python3
"""Optimum's side of the benchmark: one SDXL generation with ORTStableDiffusionXLPipeline
(or ORTStableDiffusionXLImg2ImgPipeline) on an Optimum ONNX directory, one JSON line per run.

The same workload JSON as benches/engine.rs (prompt, width, height, steps, guidance_scale, seed,
scheduler "euler", optional init_image + strength), the same ONNX Runtime version (1.32.0 from
PyPI), the same intra-op thread count and graph optimisation level (ORT_ENABLE_ALL), the same
seeded torch CPU generator, EulerDiscreteScheduler from the model's scheduler config.

How the stages are timed (wall clock, time.perf_counter):
- every component's `session.run` is wrapped: time inside ONNX Runtime per graph;
- text encoding: `pipe.encode_prompt` (tokenizers + both text encoders + concatenation);
- UNet step: from the first `scheduler.scale_model_input` to the last `callback_on_step_end`,
  divided by the number of steps (CFG batch, UNet, guidance, scheduler step);
- VAE: `vae_encoder.forward` (img2img) + `vae_decoder.forward`;
- wall: the whole `pipe(...)` call, returning PIL images; engine overhead = wall - inside ORT;
- load: `from_pretrained`; imports (torch, diffusers, optimum) are reported apart (import_ms);
- peak RSS: VmHWM of this process (run one measurement per process).

  /work/venv-gen/bin/python tools/bench/optimum_bench.py --model tests/fixtures/tiny-sdxl \
      --request '{"prompt": "...", "width": 64, "height": 64, "steps": 20, "guidance_scale": 5, "seed": 42}'
"""
from __future__ import annotations

import time

PROCESS_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "vae_encoder", "vae_decoder")
WORKLOAD_KEYS = {"prompt", "width", "height", "steps", "guidance_scale", "seed", "scheduler", "init_image", "strength"}


def proc_status_bytes(field: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def load_workload(text: str) -> dict:
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    workload = json.loads(text)
    unknown = set(workload) - WORKLOAD_KEYS
    if unknown:
        raise SystemExit(f"unknown workload keys {sorted(unknown)}; valid: {sorted(WORKLOAD_KEYS)}")
    if workload.get("scheduler", "euler") != "euler":
        raise SystemExit("only scheduler 'euler' (EulerDiscreteScheduler) is benchmarked")
    if ("init_image" in workload) != ("strength" in workload):
        raise SystemExit("img2img needs both init_image and strength")
    return workload


class StageTimer:
    """Wraps the pipeline's sessions and stage functions and accumulates wall time per stage."""

    def __init__(self, pipe):
        self.ort = defaultdict(float)
        self.calls = defaultdict(int)
        self.stage = defaultdict(float)
        self.loop_start = None
        self.loop_end = None
        for name in COMPONENTS:
            component = getattr(pipe, name, None)
            if component is None:
                continue
            session = component.session
            session.run = self._timed_run(name, session.run)
            # With CUDA, optimum uses IO binding (run_with_iobinding) instead of run.
            session.run_with_iobinding = self._timed_run(name, session.run_with_iobinding)
            if name.startswith("vae_"):
                component.forward = self._timed_stage("vae", component.forward)
        pipe.encode_prompt = self._timed_stage("text_encoding", pipe.encode_prompt)
        scale = pipe.scheduler.scale_model_input

        def scale_model_input(*args, **kwargs):
            if self.loop_start is None:
                self.loop_start = time.perf_counter()
            return scale(*args, **kwargs)

        pipe.scheduler.scale_model_input = scale_model_input

    def _timed_run(self, name, run):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return run(*args, **kwargs)
            finally:
                self.ort[name] += time.perf_counter() - started
                self.calls[name] += 1

        return timed

    def _timed_stage(self, stage, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.stage[stage] += time.perf_counter() - started

        return timed

    def on_step_end(self, pipe, step, timestep, callback_kwargs):
        self.loop_end = time.perf_counter()
        return callback_kwargs

    def reset(self):
        self.ort.clear()
        self.calls.clear()
        self.stage.clear()
        self.loop_start = self.loop_end = None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Optimum ONNX directory")
    ap.add_argument("--request", required=True, help="workload JSON, or @FILE")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (and torch threads)")
    ap.add_argument("--provider", default="CPUExecutionProvider", help="e.g. CUDAExecutionProvider (tools/bench/gpu.sh)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of the same request first")
    ap.add_argument("--runs", type=int, default=1, help="measured runs in this process")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", help="write the last image here (PNG)")
    args = ap.parse_args(argv)
    workload = load_workload(args.request)

    import onnxruntime as ort
    import torch
    from diffusers import EulerDiscreteScheduler
    from optimum.onnxruntime import ORTStableDiffusionXLImg2ImgPipeline, ORTStableDiffusionXLPipeline
    from PIL import Image

    import_ms = (time.perf_counter() - PROCESS_T0) * 1e3
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    img2img = "init_image" in workload
    cls = ORTStableDiffusionXLImg2ImgPipeline if img2img else ORTStableDiffusionXLPipeline
    load_started = time.perf_counter()
    pipe = cls.from_pretrained(args.model, provider=args.provider, session_options=options)
    load_ms = (time.perf_counter() - load_started) * 1e3
    rss_after_load = proc_status_bytes("VmRSS")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    timer = StageTimer(pipe)

    call = dict(
        prompt=workload["prompt"],
        num_inference_steps=workload["steps"],
        guidance_scale=workload["guidance_scale"],
        output_type="pil",
        callback_on_step_end=timer.on_step_end,
    )
    if img2img:
        call.update(image=Image.open(workload["init_image"]).convert("RGB"), strength=workload["strength"])
    else:
        call.update(width=workload["width"], height=workload["height"])

    def generate():
        return pipe(generator=torch.Generator("cpu").manual_seed(workload["seed"]), **call)

    for _ in range(args.warmup):
        generate()
    for _ in range(args.runs):
        timer.reset()
        started = time.perf_counter()
        result = generate()
        wall_ms = (time.perf_counter() - started) * 1e3
        steps = timer.calls["unet"]
        inside_ort_ms = sum(timer.ort.values()) * 1e3
        loop_ms = (timer.loop_end - timer.loop_start) * 1e3 if steps else 0.0
        line = dict(
            side="optimum",
            label=args.label,
            threads=args.threads,
            provider=pipe.unet.session.get_providers()[0],
            ort=f"onnxruntime {ort.__version__} ({os.path.dirname(ort.__file__)})",
            import_ms=import_ms,
            load_ms=load_ms,
            wall_ms=wall_ms,
            text_encoding_ms=timer.stage["text_encoding"] * 1e3,
            unet_steps=steps,
            unet_step_mean_ms=loop_ms / max(steps, 1),
            unet_ort_mean_ms=timer.ort["unet"] * 1e3 / max(steps, 1),
            vae_ms=timer.stage["vae"] * 1e3,
            inside_ort_ms=inside_ort_ms,
            overhead_ms=wall_ms - inside_ort_ms,
            overhead_pct=100.0 * (wall_ms - inside_ort_ms) / wall_ms,
            rss_after_load_bytes=rss_after_load,
            peak_rss_bytes=proc_status_bytes("VmHWM"),
        )
        print(json.dumps(line), flush=True)
        if args.out:
            result.images[0].save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
