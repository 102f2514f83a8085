#!/usr/bin/env bash
# The benchmark on an NVIDIA GPU: sdxl-backend (CUDA execution provider) vs Optimum's
# ORTStableDiffusionXLPipeline (CUDAExecutionProvider, IO binding on, optimum's default there).
#
# On the build machine (x86-64, this repository):
#   cargo build --release --features cuda --bench engine
#   tools/bench/gpu.sh --pack DIR [--with-sdxl]   # engine binary + scripts + tiny fixture (+ the
#                                                  # ~7 GB SDXL-sized export) into DIR, repo layout
# On the GPU machine (CUDA 13, cuDNN 9, a Python venv with onnxruntime-gpu >= 1.31 and
# optimum-onnx 0.1.0 / diffusers 0.39; nothing is downloaded there), from DIR:
#   PYTHON=/path/to/venv/bin/python tools/bench/gpu.sh [--workloads a,b,c,d] [run.py options]
#
# Both sides then use the same ONNX Runtime: ORT_DYLIB_PATH defaults to the libonnxruntime.so.*
# inside that venv's onnxruntime package (set it to override). The crate is built with ort's
# api-31 feature, so the library must be >= 1.31 (a 1.30 library needs an api-30 build).
# Results: bench-data/BENCHMARKS-gpu.md and bench-data/results-*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."

engine_binary() {
  # The newest engine bench executable cargo built (target/release/deps/engine-<hash>).
  ls -t target/release/deps/engine-* 2>/dev/null | grep -v '\.d$' | head -n 1
}

if [[ "${1:-}" == "--pack" ]]; then
  dest="${2:?usage: tools/bench/gpu.sh --pack DIR [--with-sdxl]}"
  engine="$(engine_binary)"
  [[ -n "$engine" ]] || { echo "build first: cargo build --release --features cuda --bench engine" >&2; exit 1; }
  mkdir -p "$dest/target/release/deps" "$dest/tools" "$dest/tests/fixtures" "$dest/bench-data"
  cp "$engine" "$dest/target/release/deps/"
  cp -r tools/bench tools/fixtures "$dest/tools/"
  cp -r tests/fixtures/tiny-sdxl "$dest/tests/fixtures/"
  cp Cargo.lock "$dest/"
  if [[ "${3:-}" == "--with-sdxl" ]]; then
    cp -r bench-data/sdxl-sized "$dest/bench-data/"
  fi
  echo "packed into $dest ($(du -sh "$dest" | cut -f1))"
  exit 0
fi

python="${PYTHON:-python3}"
if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
  capi="$("$python" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
  ORT_DYLIB_PATH="$(ls "$capi"/libonnxruntime.so.* | head -n 1)"
  export ORT_DYLIB_PATH
fi
"$python" -c 'import onnxruntime as o; p = o.get_available_providers(); print("python onnxruntime", o.__version__, p); assert "CUDAExecutionProvider" in p, "not a GPU build of onnxruntime"'
echo "engine loads ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

engine="$(engine_binary)"
[[ -x "$engine" ]] || { echo "no engine binary under target/release/deps (see --pack)" >&2; exit 1; }
workloads="a,b,c"
[[ -f bench-data/sdxl-sized/bench_model.json ]] && workloads="a,b,c,d"
# The GPU is not shared with the 2-core CPU's other users: no load-average wait; SDXL-sized at
# 1024x1024 (its native size) is what a GPU is for.
exec "$python" tools/bench/run.py --device cuda --engine "$engine" --python "$python" \
  --workloads "$workloads" --sdxl-size 1024 --extra-threads 0 --max-wait 0 \
  --out bench-data/BENCHMARKS-gpu.md "$@"
