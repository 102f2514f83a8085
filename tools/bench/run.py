#!/usr/bin/env python3
"""Side-by-side benchmark: sdxl-backend (benches/engine.rs) vs Optimum's
ORTStableDiffusionXLPipeline on the same ONNX graphs; writes BENCHMARKS.md.

One command, from the repository root:

  python3 tools/bench/run.py

It builds the bench binary (cargo build --release --benches), generates the fixtures it needs
under bench-data/ (git-ignored: the img2img input image and, once, the SDXL-sized random-weight
export, ~7 GB, ~5 min), waits (up to --max-wait seconds) for the load average to drop below
--max-load, then runs every workload interleaved (A B, B A, A B, ...), each measurement in a fresh process,
and writes BENCHMARKS.md (tables, machine, versions, load average, this command) from the
results plus the hand-written analysis in tools/bench/notes.md. Raw JSON lines go to
bench-data/results-<time>.jsonl.

Options worth knowing: --quick (1 run per side, no BENCHMARKS.md, to check the harness),
--render bench-data/results-<time>.ctx.json (rewrite BENCHMARKS.md from a finished run),
--workloads a,b,c (skip d), --runs N, --sdxl-runs N, --threads N.
Only the standard library is needed here; the Optimum side runs in --python (the pinned venv,
default /work/venv-gen/bin/python or $SDXL_BENCH_PYTHON).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "tools" / "bench"
DATA = REPO / "bench-data"
TINY = REPO / "tests" / "fixtures" / "tiny-sdxl"
SDXL_SIZED = DATA / "sdxl-sized"
PROMPT = "a photo of an astronaut riding a horse on mars"


def workloads(sdxl_steps: int, sdxl_size: int) -> dict[str, dict]:
    """The four workloads: id -> model dir, request JSON, description."""
    base = dict(prompt=PROMPT, steps=20, guidance_scale=5.0, seed=42, scheduler="euler")
    return {
        "a": dict(title="(a) tiny-sdxl 64x64, 20 steps, CFG 5", model=TINY, request=dict(base, width=64, height=64)),
        "b": dict(title="(b) tiny-sdxl 256x256, 20 steps, CFG 5", model=TINY, request=dict(base, width=256, height=256)),
        "c": dict(
            title="(c) tiny-sdxl img2img 64x64, strength 0.6, 20 steps (12 run), CFG 5",
            model=TINY,
            request=dict(base, width=64, height=64, init_image=str(DATA / "init_64.png"), strength=0.6),
        ),
        "d": dict(
            title=f"(d) SDXL-sized (random weights) {sdxl_size}x{sdxl_size}, {sdxl_steps} steps, CFG 5",
            model=SDXL_SIZED,
            request=dict(base, width=sdxl_size, height=sdxl_size, steps=sdxl_steps),
        ),
    }


# ------------------------------------------------------------------------------------------------
# Fixtures and tools
# ------------------------------------------------------------------------------------------------


def write_png_rgb(path: Path, width: int, height: int, pixel) -> None:
    """A minimal 8-bit RGB PNG writer (stdlib only)."""
    raw = b"".join(b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_init_image(path: Path) -> None:
    """64x64 gradients with a soft disc: deterministic img2img input."""
    if path.is_file():
        return

    def pixel(x, y):
        d = ((x - 40) ** 2 + (y - 24) ** 2) ** 0.5
        disc = max(0.0, 1.0 - d / 18.0)
        return (min(255, int(4 * x + 200 * disc)), int(4 * y), min(255, int(2 * (x + y) * (1 - disc) + 60 * disc)))

    write_png_rgb(path, 64, 64, pixel)


def build_engine() -> Path:
    """cargo build --release --benches; returns the engine bench executable."""
    cmd = ["cargo", "build", "--release", "--benches", "--message-format=json-render-diagnostics"]
    out = subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "engine" and msg.get("executable"):
            return Path(msg["executable"])
    raise SystemExit("cargo did not report the `engine` bench executable")


def ensure_sdxl_sized(python: str) -> dict:
    stamp = SDXL_SIZED / "bench_model.json"
    if not stamp.is_file():
        print("building the SDXL-sized random-weight export (once; ~5 min, ~7 GB) ...", flush=True)
        subprocess.run([python, str(BENCH_DIR / "make_sdxl_sized.py"), "--out", str(SDXL_SIZED)], check=True)
    return json.loads(stamp.read_text())


def warm_page_cache(model: Path) -> None:
    """Reads every file of the model once, so that no side pays for reading it from disk."""
    for path in sorted(model.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                while f.read(1 << 24):
                    pass


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def wait_for_quiet(max_load: float, max_wait: float) -> tuple[float, float, float]:
    deadline = time.time() + max_wait
    while True:
        load = loadavg()
        if load[0] < max_load or time.time() >= deadline:
            return load
        print(f"load average {load[0]:.2f} >= {max_load}; waiting ...", flush=True)
        time.sleep(min(30.0, max(1.0, deadline - time.time())))


def run_json(cmd: list[str], env=None) -> dict:
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def compare_images(python: str, a: Path, b: Path) -> str:
    code = (
        "import sys, numpy as np; from PIL import Image;"
        "x, y = (np.asarray(Image.open(p).convert('RGB')).astype(int) for p in sys.argv[1:]);"
        "print('max abs diff %d/255 (mean %.2g)' % (abs(x - y).max(), abs(x - y).mean()) if x.shape == y.shape else 'shapes differ')"
    )
    proc = subprocess.run([python, "-c", code, str(a), str(b)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc.stdout.strip() or "comparison failed"


# ------------------------------------------------------------------------------------------------
# Machine and versions
# ------------------------------------------------------------------------------------------------


def command_output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip()
    except OSError:
        return "?"


def machine() -> dict:
    lscpu = dict(line.split(":", 1) for line in command_output(["lscpu"]).splitlines() if ":" in line)
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    return {
        "cpu": f"{lscpu.get('Model name', '?').strip()} (family {lscpu.get('CPU family', '?').strip()}, model {lscpu.get('Model', '?').strip()}), "
        f"L3 {lscpu.get('L3 cache', '?').strip()}",
        "cores": f"{lscpu.get('CPU(s)', '?').strip()} ({lscpu.get('Thread(s) per core', '?').strip()} thread(s) per core)",
        "flags": "AVX-512" if "avx512f" in lscpu.get("Flags", "") else ("AVX2" if "avx2" in lscpu.get("Flags", "") else "?"),
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "virtualization": lscpu.get("Hypervisor vendor", "none").strip(),
    }


def versions(python: str) -> dict:
    lock = (REPO / "Cargo.lock").read_text()
    ort_crate = "?"
    blocks = lock.split("[[package]]")
    for block in blocks:
        if 'name = "ort"' in block:
            ort_crate = block.split('version = "', 1)[1].split('"', 1)[0]
    code = (
        "import importlib.metadata as m, json, sys;"
        "print(json.dumps({p: m.version(p) for p in ['optimum', 'optimum-onnx', 'onnxruntime', 'diffusers', 'transformers', 'torch', 'numpy']}"
        " | {'python': sys.version.split()[0]}))"
    )
    py = json.loads(command_output([python, "-c", code]) or "{}")
    return {"rustc": command_output(["rustc", "-V"]), "ort crate": ort_crate, **py}


# ------------------------------------------------------------------------------------------------
# Statistics and the report
# ------------------------------------------------------------------------------------------------


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summary(rows: list[dict]) -> dict:
    """Medians of every metric, the wall range, and the fastest run (the least disturbed one:
    on a shared machine interference only ever adds time)."""
    walls = [r["wall_ms"] for r in rows]
    keys = ["load_ms", "text_encoding_ms", "unet_step_mean_ms", "vae_ms", "inside_ort_ms", "overhead_ms", "overhead_pct", "peak_rss_bytes"]
    out = {k: med(rows, k) for k in keys}
    out.update(n=len(rows), wall_med=statistics.median(walls), wall_min=min(walls), wall_max=max(walls), unet_steps=rows[0]["unet_steps"])
    out["load_min"] = min(r["load_ms"] for r in rows)
    out["fastest"] = min(rows, key=lambda r: r["wall_ms"])
    if "import_ms" in rows[0]:
        out["import_ms"] = med(rows, "import_ms")
    return out


def fmt_ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def fmt_mib(v: float) -> str:
    return f"{v / 2**20:,.0f} MiB"


def verdicts(wid: str, e: dict, o: dict, model_bytes: int | None) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for a workload. Wall and load verdicts use the fastest run of each
    side (least disturbed by other work on the machine); the medians are shown beside them."""
    out = []
    if wid in ("a", "b"):
        speedup = o["wall_med"] / e["wall_med"]
        fastest = o["wall_min"] / e["wall_min"]
        out.append((">= 3x faster than Optimum end to end (wall per request)", f"{speedup:.2f}x median, {fastest:.2f}x fastest runs", speedup >= 3.0))
        cold_e, cold_o = e["load_ms"] + e["wall_med"], o.get("import_ms", 0) + o["load_ms"] + o["wall_med"]
        out.append(("(for reference) >= 3x faster from process start to first image", f"{cold_o / cold_e:.1f}x ({fmt_ms(cold_e)} vs {fmt_ms(cold_o)} ms)", cold_o / cold_e >= 3.0))
    if wid == "d":
        out.append(("engine overhead <= 1% of wall", f"{e['overhead_pct']:.2f}% ({fmt_ms(e['overhead_ms'])} ms; Optimum {o['overhead_pct']:.2f}%)", e["overhead_pct"] <= 1.0))
        out.append(("wall <= Optimum's", f"fastest runs {fmt_ms(e['wall_min'])} vs {fmt_ms(o['wall_min'])} ms (medians {fmt_ms(e['wall_med'])} vs {fmt_ms(o['wall_med'])})", e["wall_min"] <= o["wall_min"]))
        out.append(("peak RSS <= Optimum's", f"{fmt_mib(e['peak_rss_bytes'])} vs {fmt_mib(o['peak_rss_bytes'])}", e["peak_rss_bytes"] <= o["peak_rss_bytes"]))
        if model_bytes:
            ratio = e["peak_rss_bytes"] / model_bytes
            out.append(("peak RSS <= 1.3x the model files", f"{ratio:.2f}x of {fmt_mib(model_bytes)}", ratio <= 1.3))
        out.append(("load time <= Optimum's", f"fastest {fmt_ms(e['load_min'])} vs {fmt_ms(o['load_min'])} ms (medians {fmt_ms(e['load_ms'])} vs {fmt_ms(o['load_ms'])})", e["load_min"] <= o["load_min"]))
    return out


def summarize(ctx: dict) -> None:
    """Fills each workload's statistics and verdicts from its raw rows (also for --render)."""
    model_bytes = ctx["model"]["onnx_total_bytes"] if ctx.get("model") else None
    for key, w in ctx["results"].items():
        e, o = summary(w["rows"]["engine"]), summary(w["rows"]["optimum"])
        w.update(engine=e, optimum=o, loadavg=statistics.median(r["loadavg"] for r in w["rows"]["engine"] + w["rows"]["optimum"]))
        w["verdicts"] = verdicts(key, e, o, model_bytes if key == "d" else None) if "@" not in key else []


def render(ctx: dict) -> str:
    lines = ["# Benchmarks: sdxl-backend vs Optimum's ORTStableDiffusionXLPipeline", ""]
    lines += [
        "Generated by `tools/bench/run.py` (do not edit by hand; the analysis comes from",
        "`tools/bench/notes.md`). Same ONNX graphs, same ONNX Runtime version (1.32.0), same",
        f"intra-op threads ({ctx['threads']}, set through SessionOptions on both sides; rows marked `1 thread(s)`",
        "repeat a-c with 1 intra-op thread on both sides), graph optimisation",
        f"level ORT_ENABLE_ALL on both, {ctx['device'].upper()} execution provider, EulerDiscreteScheduler from the model's",
        "config, the same prompt and seed (torch CPU generator on both; the images agree, see below).",
        "Each measurement is a fresh process (peak RSS is per process); runs are interleaved A B B A A B ...",
        "(the order flips every pair so that a drift of the machine does not favour one side), and the",
        "model files are read once before each workload so that both sides load them from the page cache.",
        "",
        "## Command",
        "",
        "```sh",
        ctx["command"],
        "```",
        "",
        f"Run {ctx['started']} .. {ctx['finished']} ({ctx['duration_min']:.1f} min).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in ctx["machine"].items()]
    lines += [f"| load average before the run | {ctx['load_before'][0]:.2f} / {ctx['load_before'][1]:.2f} / {ctx['load_before'][2]:.2f} (1/5/15 min), "
              f"after waiting {ctx['waited_s'] / 60:.1f} min for < {ctx['max_load']} |"]
    lines += [f"| load average after the run | {ctx['load_after'][0]:.2f} / {ctx['load_after'][1]:.2f} / {ctx['load_after'][2]:.2f} |"]
    lines += ["", "## Versions", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in ctx["versions"].items()]
    lines += [f"| engine ONNX Runtime | {ctx['engine_ort']} |", ""]
    lines += ["## Results", "", "Milliseconds unless stated; medians over the runs except the wall range.", ""]
    lines += [
        "| workload | side | runs | wall median (min .. max) | text enc | UNet step (mean) | VAE | inside ORT | engine overhead | peak RSS | load | imports |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for wid, w in ctx["results"].items():
        for side in ("engine", "optimum"):
            s = w[side]
            lines.append(
                f"| {w['title'] if side == 'engine' else ''} | {'sdxl-backend' if side == 'engine' else 'Optimum'} | {s['n']} "
                f"| **{fmt_ms(s['wall_med'])}** ({fmt_ms(s['wall_min'])} .. {fmt_ms(s['wall_max'])}) | {fmt_ms(s['text_encoding_ms'])} "
                f"| {fmt_ms(s['unet_step_mean_ms'])} x {s['unet_steps']} | {fmt_ms(s['vae_ms'])} | {fmt_ms(s['inside_ort_ms'])} "
                f"| {fmt_ms(s['overhead_ms'])} ({s['overhead_pct']:.1f}%) | {fmt_mib(s['peak_rss_bytes'])} | {fmt_ms(s['load_ms'])} "
                f"| {fmt_ms(s['import_ms']) if 'import_ms' in s else '-'} |"
            )
    lines += ["", "Speed-up (Optimum median wall / sdxl-backend median wall) and cold start (imports + load + one request):", ""]
    lines += ["| workload | speed-up per request (medians) | at equal ORT time (estimate) | cold start sdxl-backend | cold start Optimum | images | load average (1 min, median over its runs) |",
              "|---|---|---|---|---|---|---|"]
    for wid, w in ctx["results"].items():
        e, o = w["engine"], w["optimum"]
        cold_e = e["load_ms"] + e["wall_med"]
        cold_o = o.get("import_ms", 0) + o["load_ms"] + o["wall_med"]
        ort = statistics.median(r["inside_ort_ms"] for r in w["rows"]["engine"] + w["rows"]["optimum"])
        equal = (ort + o["overhead_ms"]) / (ort + e["overhead_ms"])
        lines.append(f"| {wid} | {o['wall_med'] / e['wall_med']:.2f}x | {equal:.2f}x | {fmt_ms(cold_e)} | {fmt_ms(cold_o)} | {w['image_diff']} | {w['loadavg']:.2f} |")
    lines += ["", "The fastest run of each side (the least disturbed by other work on this shared machine; its",
              "stages, not medians):", ""]
    lines += ["| workload | side | wall | text enc | UNet step | VAE | engine overhead | fastest load |", "|---|---|---|---|---|---|---|---|"]
    for wid, w in ctx["results"].items():
        for side in ("engine", "optimum"):
            f, s = w[side]["fastest"], w[side]
            lines.append(f"| {wid} | {'sdxl-backend' if side == 'engine' else 'Optimum'} | {fmt_ms(f['wall_ms'])} | {fmt_ms(f['text_encoding_ms'])} "
                         f"| {fmt_ms(f['unet_step_mean_ms'])} | {fmt_ms(f['vae_ms'])} | {fmt_ms(f['overhead_ms'])} ({f['overhead_pct']:.2f}%) | {fmt_ms(s['load_min'])} |")
    lines += ["", "## Targets", "", "| workload | target | measured | met |", "|---|---|---|---|"]
    for wid, w in ctx["results"].items():
        for target, measured, met in w["verdicts"]:
            lines.append(f"| {wid} | {target} | {measured} | {'yes' if met else '**no**'} |")
    if ctx.get("model"):
        m = ctx["model"]
        lines += ["", "## The SDXL-sized model (workload d)", ""]
        lines += [
            "Real SDXL base 1.0 architectures with random weights (tools/bench/make_sdxl_sized.py, exported",
            "with optimum's `onnx_export_from_model`, opset 18, fp32, external data for the graphs over 2 GB).",
            f"Cut: UNet `transformer_layers_per_block` {tuple(m['cut']['unet.transformer_layers_per_block']['real'])} -> "
            f"{tuple(m['cut']['unet.transformer_layers_per_block']['here'])}; everything else is the real size.",
            "",
            "| component | parameters | files |",
            "|---|---|---|",
        ]
        for comp, n in m["parameters"].items():
            files = {k: v for k, v in m["onnx_files_bytes"].items() if k.startswith(comp + "/")}
            desc = ", ".join(f"{k.split('/', 1)[1]} {v / 1e6:,.0f} MB" for k, v in files.items())
            lines.append(f"| {comp} | {n / 1e6:,.1f} M | {desc} |")
        lines += ["", f"All ONNX files: {m['onnx_total_bytes'] / 1e9:.2f} GB ({fmt_mib(m['onnx_total_bytes'])}); export took {m['export_seconds']:.0f} s."]
    lines += ["", "## Definitions", ""]
    lines += [
        "- **wall**: one generation request. sdxl-backend: `SdxlBackend::generate_advanced` (includes PNG",
        "  encoding of the result); Optimum: the `pipe(...)` call returning a PIL image.",
        "- **text enc**: sdxl-backend `timings.text_encoding` (tokenizers, both encoders, conditioning);",
        "  Optimum: `pipe.encode_prompt`.",
        "- **UNet step**: one denoising step (CFG batch of 2, UNet, guidance, scheduler step). sdxl-backend:",
        "  mean of `timings.steps`; Optimum: first `scale_model_input` to last `callback_on_step_end`, / steps.",
        "- **VAE**: encode (img2img) + decode. sdxl-backend `timings.vae`; Optimum: the VAE components' `forward`.",
        "- **inside ORT**: sum of the time inside ONNX Runtime's `run` over all graphs (sdxl-backend:",
        "  `timings.inside_ort`; Optimum: every component's `session.run` wrapped). **engine overhead** = wall - inside ORT.",
        "- **at equal ORT time (estimate)**: (T + Optimum's overhead) / (T + sdxl-backend's overhead), T the",
        "  median inside-ORT time of all runs of both sides. Both run the same graphs in the same library with the",
        "  same options, so ORT's share should be equal; this is the speed-up with the machine's noise taken out.",
        "- **peak RSS**: `VmHWM` of the measuring process (load + warm-up + measured run).",
        "- **load**: `SdxlBackend::init_backend` vs `from_pretrained` (all five sessions, tokenizers,",
        "  configs). **imports**: Python imports of torch/diffusers/optimum before `from_pretrained`.",
        f"- warm-up: {ctx['warmup_note']}",
    ]
    notes = BENCH_DIR / "notes.md"
    if notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    lines += ["", f"Raw results: `{ctx['raw']}` (git-ignored)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="a,b,c,d")
    ap.add_argument("--runs", type=int, default=5, help="measurements per side for a, b, c")
    ap.add_argument("--sdxl-runs", type=int, default=5, help="measurements per side for d")
    ap.add_argument("--sdxl-steps", type=int, default=20)
    ap.add_argument("--sdxl-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed requests per process before the measured one (a, b, c)")
    ap.add_argument("--sdxl-warmup", type=int, default=0, help="the same for d")
    ap.add_argument("--extra-threads", type=int, default=1,
                    help="run a, b, c once more with this intra-op thread count on both sides (0 = skip)")
    ap.add_argument("--quick", action="store_true", help="1 run per side, do not write BENCHMARKS.md")
    ap.add_argument("--max-load", type=float, default=1.0)
    ap.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for the load average to drop")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: engine --device cuda, Optimum CUDAExecutionProvider (see tools/bench/gpu.sh)")
    ap.add_argument("--engine", type=Path, help="a prebuilt engine bench binary (default: build it)")
    ap.add_argument("--python", default=os.environ.get("SDXL_BENCH_PYTHON", "/work/venv-gen/bin/python"))
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--render", type=Path, metavar="CTX_JSON",
                    help="only rewrite --out from a finished run's bench-data/results-*.ctx.json (e.g. after editing notes.md)")
    args = ap.parse_args(argv)
    if args.render:
        ctx = json.loads(args.render.read_text())
        raw = [json.loads(line) for line in (REPO / ctx["raw"]).read_text().splitlines()]
        for key, w in ctx["results"].items():
            w["rows"] = {side: [r for r in raw if r["label"] == key and r["side"] == side] for side in ("engine", "optimum")}
        summarize(ctx)
        args.out.write_text(render(ctx))
        print(f"wrote {args.out} from {args.render}")
        return 0
    selected = [w.strip() for w in args.workloads.split(",") if w.strip()]
    runs = 1 if args.quick else args.runs
    sdxl_runs = 1 if args.quick else args.sdxl_runs

    DATA.mkdir(exist_ok=True)
    engine = args.engine or build_engine()
    make_init_image(DATA / "init_64.png")
    model_info = ensure_sdxl_sized(args.python) if "d" in selected else None
    all_workloads = workloads(args.sdxl_steps, args.sdxl_size)

    wait_started = time.time()
    load_before = wait_for_quiet(args.max_load, 0 if args.quick else args.max_wait)
    waited_s = time.time() - wait_started
    print(f"load average {load_before}", flush=True)
    started = datetime.datetime.now()
    raw_path = DATA / f"results-{started:%Y%m%d-%H%M%S}.jsonl"
    results = {}
    engine_ort = "?"
    passes = [(wid, args.threads) for wid in selected]
    if args.extra_threads and args.extra_threads != args.threads and not args.quick:
        passes += [(wid, args.extra_threads) for wid in selected if wid != "d"]
    with raw_path.open("w") as raw:
        for wid, threads in passes:
            w = all_workloads[wid]
            key = wid if threads == args.threads else f"{wid}@{threads}t"
            n = sdxl_runs if wid == "d" else runs
            warmup = args.sdxl_warmup if wid == "d" else args.warmup
            request = json.dumps(w["request"])
            common = ["--model", str(w["model"]), "--request", request, "--threads", str(threads), "--warmup", str(warmup), "--label", key]
            rows = {"engine": [], "optimum": []}
            warm_page_cache(Path(w["model"]))
            for i in range(n):
                out = {side: DATA / f"{key}-{side}.png" for side in rows}
                extra = lambda side: ["--out", str(out[side])] if i == 0 else []  # noqa: E731
                # A B, then B A: a slow drift of the machine (page cache, other users) then
                # cancels out instead of always favouring the side that runs second.
                for side in ("engine", "optimum") if i % 2 == 0 else ("optimum", "engine"):
                    if side == "engine":
                        cmd = [str(engine), *common, "--device", args.device, *extra(side)]
                    else:
                        provider = "CUDAExecutionProvider" if args.device == "cuda" else "CPUExecutionProvider"
                        cmd = [args.python, str(BENCH_DIR / "optimum_bench.py"), *common, "--provider", provider, *extra(side)]
                    row = run_json(cmd)
                    row["loadavg"] = loadavg()[0]
                    rows[side].append(row)
                    raw.write(json.dumps(row) + "\n")
                    raw.flush()
                    print(f"{key} {side:8} run {i + 1}/{n}: wall {row['wall_ms']:9.1f} ms  load {row['load_ms']:8.1f} ms  "
                          f"overhead {row['overhead_pct']:5.2f}%  peak {row['peak_rss_bytes'] / 2**20:7.0f} MiB", flush=True)
            engine_ort = rows["engine"][0]["ort"] + " (" + rows["engine"][0].get("ort_build", "") + ")"
            results[key] = dict(
                title=w["title"] + ("" if key == wid else f", {threads} thread(s)"), rows=rows,
                image_diff=compare_images(args.python, DATA / f"{key}-engine.png", DATA / f"{key}-optimum.png"),
            )
    finished = datetime.datetime.now()
    summarize({"results": results, "model": model_info})
    for wid, w in results.items():
        print(f"{wid}: engine {w['engine']['wall_med']:.1f} ms, optimum {w['optimum']['wall_med']:.1f} ms; images {w['image_diff']}")
        for target, measured, met in w["verdicts"]:
            print(f"   {'MET ' if met else 'MISS'} {target}: {measured}")
    if args.quick:
        return 0
    cmd = "python3 tools/bench/run.py" + ("" if argv is None and len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:] if argv is None else argv))
    ctx = dict(
        command=cmd, threads=args.threads, device=args.device, started=f"{started:%Y-%m-%d %H:%M}", finished=f"{finished:%H:%M}",
        duration_min=(finished - started).total_seconds() / 60, machine=machine(), versions=versions(args.python),
        engine_ort=engine_ort, load_before=load_before, waited_s=waited_s, max_load=args.max_load, load_after=loadavg(), results=results, model=model_info,
        raw=str(raw_path.relative_to(REPO)),
        warmup_note=f"{args.warmup} untimed request(s) per process before the measured one for a, b, c; "
        f"{args.sdxl_warmup} for d (its first UNet call is in the mean), the same on both sides.",
    )
    raw_path.with_suffix(".ctx.json").write_text(json.dumps(ctx, indent=1) + "\n")
    args.out.write_text(render(ctx))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
