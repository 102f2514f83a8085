#!/usr/bin/env python3
"""Build an SDXL-sized random-weight pipeline and export it to ONNX (Optimum layout).

The real SDXL base 1.0 architectures (UNet, CLIP ViT-L, OpenCLIP ViT-bigG with projection,
the VAE) with random weights, built from configs in this file with fixed seeds (nothing is
downloaded), exported with optimum's exporter exactly like tools/fixtures/make_tiny_sdxl.py
exports the tiny fixture. One cut, so that export and inference fit a 24 GiB machine:

  UNet transformer_layers_per_block (1, 2, 10) -> (1, 2, 2)

(the full fp32 UNet is 2.57 B parameters / ~10.3 GB; the cut one is 0.90 B / ~3.6 GB). Every
other dimension is the real one. Graphs over 2 GB (unet, text_encoder_2) are written with
external data (model.onnx + model.onnx_data), as the real SDXL export is.

Output: bench-data/sdxl-sized/ (git-ignored; never commit these weights), plus
bench-data/sdxl-sized/bench_model.json describing the cut and the file sizes.

  /work/venv-gen/bin/python tools/bench/make_sdxl_sized.py [--out DIR] [--force]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tools" / "fixtures"))
import make_tiny_sdxl as tiny  # noqa: E402  (scheduler config and export clean-ups)

DEFAULT_OUT = REPO_ROOT / "bench-data" / "sdxl-sized"
TINY = REPO_ROOT / "tests" / "fixtures" / "tiny-sdxl"

# Seeds, one per component (as in make_tiny_sdxl.py).
SEED_TEXT_ENCODER = 2001
SEED_TEXT_ENCODER_2 = 2002
SEED_UNET = 2003
SEED_VAE = 2004

REAL_TRANSFORMER_LAYERS = (1, 2, 10)
TRANSFORMER_LAYERS = (1, 2, 2)

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, except transformer_layers_per_block.
UNET_CONFIG = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    transformer_layers_per_block=TRANSFORMER_LAYERS,
    projection_class_embeddings_input_dim=2816,  # 6 * 256 + 1280
    cross_attention_dim=2048,  # 768 (ViT-L) + 1280 (bigG)
    norm_num_groups=32,
    upcast_attention=False,
)

# stabilityai/stable-diffusion-xl-base-1.0 vae/config.json.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)


def clip_config(hidden: int, layers: int, heads: int, intermediate: int, act: str):
    from transformers import CLIPTextConfig

    # text_encoder / text_encoder_2 config.json of SDXL base 1.0 (bos/eos/pad 0/2/1 as there).
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=hidden,
        layer_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        torch_dtype="float32",
    )


def build_pipeline():
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(SEED_TEXT_ENCODER)
    text_encoder = CLIPTextModel(clip_config(768, 12, 12, 3072, "quick_gelu")).eval()
    torch.manual_seed(SEED_TEXT_ENCODER_2)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(1280, 32, 20, 5120, "gelu")).eval()
    torch.manual_seed(SEED_UNET)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    torch.manual_seed(SEED_VAE)
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        # The tiny fixture's tokenizers are the real CLIP BPE vocabulary (see make_tiny_sdxl.py).
        tokenizer=CLIPTokenizer.from_pretrained(TINY / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(TINY / "tokenizer_2"),
        unet=unet,
        scheduler=tiny.build_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(out: Path, pipe, seconds: float) -> dict:
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    onnx = {k: v for k, v in files.items() if ".onnx" in k}
    return {
        "what": "SDXL base 1.0 architectures with random weights; UNet transformer_layers_per_block cut",
        "cut": {"unet.transformer_layers_per_block": {"real": list(REAL_TRANSFORMER_LAYERS), "here": list(TRANSFORMER_LAYERS)}},
        "parameters": {
            "unet": parameters(pipe.unet),
            "text_encoder": parameters(pipe.text_encoder),
            "text_encoder_2": parameters(pipe.text_encoder_2),
            "vae_encoder": parameters(pipe.vae.encoder) + parameters(pipe.vae.quant_conv),
            "vae_decoder": parameters(pipe.vae.decoder) + parameters(pipe.vae.post_quant_conv),
        },
        "onnx_files_bytes": onnx,
        "onnx_total_bytes": sum(onnx.values()),
        "txt2img_graphs_bytes": sum(v for k, v in onnx.items() if not k.startswith("vae_encoder/")),
        "export_seconds": round(seconds, 1),
        "versions": {m: __import__(m).__version__ for m in ("torch", "diffusers", "transformers", "onnx", "onnxruntime")},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--force", action="store_true", help="rebuild even if the export exists")
    args = ap.parse_args(argv)
    stamp = args.out / "bench_model.json"
    if stamp.is_file() and not args.force:
        print(f"{args.out}: already built ({stamp})")
        return 0
    from optimum.exporters.onnx import onnx_export_from_model

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    with torch.no_grad():
        pipe = build_pipeline()
        print(f"built in {time.time() - started:.0f} s; unet {parameters(pipe.unet) / 1e6:.0f} M parameters", flush=True)
        if args.out.exists():
            shutil.rmtree(args.out)
        # No validation: it would run every graph in torch and ORT (minutes, and several GB more).
        onnx_export_from_model(pipe, output=str(args.out), task="text-to-image", do_validation=False)
    tiny.patch_scheduler_config(args.out)
    tiny.strip_local_paths(args.out)
    info = describe(args.out, pipe, time.time() - started)
    stamp.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
