#!/usr/bin/env python3
"""Reference data for the Rust scheduler implementations (diffusers, k-diffusion, ComfyUI schedules).

Writes into tests/fixtures/schedulers/ (relative to the repository root):

  sdxl_base_scheduler_config.json  SDXL base 1.0's scheduler_config.json (BASE_CONFIG below)
  presets.json                     diffusers scheduler classes of schedulers.toml [presets.*]
  schedules.json                   sigma schedules of schedulers.toml [schedules.*]
  samplers.json                    k-diffusion samplers of schedulers.toml [samplers.*]

Run from anywhere with the pinned generator environment (tools/requirements.txt):

  /work/venv-gen/bin/python tools/schedulers/make_scheduler_refs.py

The output is deterministic: rerunning gives byte-identical files. The synthetic model
functions, the dtypes and the JSON formats are specified in tools/schedulers/README.md;
model_eps and denoiser below are the implementation of that spec.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import inspect
import json
import logging
import math
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import scipy.stats
import torch

import diffusers
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
    StableDiffusionXLImg2ImgPipeline,
)
from k_diffusion import external as kext
from k_diffusion import sampling as ks

ROOT = Path(__file__).resolve().parents[2]

# SDXL base 1.0 scheduler/scheduler_config.json, key order and values as published.
BASE_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

SHAPE = [1, 4, 4, 4]
PRESET_STEPS = [1, 2, 3, 4, 7, 10, 20, 25]
SCHEDULE_STEPS = [1, 2, 3, 4, 7, 10, 20, 25]
SAMPLER_STEPS = [1, 2, 3, 7, 10]
SAMPLER_SCHEDULES = ["karras", "exponential", "normal"]
IMG2IMG_STEPS = [10, 25]
IMG2IMG_STRENGTHS = [0.3, 0.6, 1.0]
VPRED_STEPS = 10
# (name, preset, extra config) for the v-prediction runs.
VPRED_CASES = [
    ("euler_v", "euler", {"prediction_type": "v_prediction"}),
    ("euler_a_v", "euler_a", {"prediction_type": "v_prediction"}),
    ("dpmpp_2m_v", "dpmpp_2m", {"prediction_type": "v_prediction"}),
    ("ddim_v", "ddim", {"prediction_type": "v_prediction"}),
    ("euler_v_zsnr", "euler", {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                               "timestep_spacing": "trailing"}),
    ("ddim_v_zsnr", "ddim", {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                             "timestep_spacing": "trailing"}),
]
GENERATOR_SEED = 1234          # torch.Generator for diffusers' randn_tensor draws
BROWNIAN_TORCH_SEED = 4321     # torch.manual_seed before each DPMSolverSDEScheduler run
NOISE_SAMPLER_SEED = 777       # torch.Generator of the k-diffusion recording noise sampler
# Sigmas at which sigma_to_t is recorded (inside, at the ends of and outside the table).
SIGMA_TO_T_PROBES = [0.01, 0.0291675, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 8.0,
                     10.0, 14.0, 14.6146, 20.0]
T_TO_SIGMA_PROBES = [0.0, 0.25, 1.0, 1.5, 10.0, 99.75, 250.5, 500.0, 749.25, 998.5, 999.0]

# k-diffusion 0.1.1.post1 sampler functions, by schedulers.toml `algorithm`.
KDIFF_ALGORITHMS = {
    "euler": ks.sample_euler,
    "euler_ancestral": ks.sample_euler_ancestral,
    "heun": ks.sample_heun,
    "dpm_2": ks.sample_dpm_2,
    "dpm_2_ancestral": ks.sample_dpm_2_ancestral,
    "lms": ks.sample_lms,
    "dpmpp_2s_ancestral": ks.sample_dpmpp_2s_ancestral,
    "dpmpp_sde": ks.sample_dpmpp_sde,
    "dpmpp_2m": ks.sample_dpmpp_2m,
    "dpmpp_2m_sde": ks.sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": ks.sample_dpmpp_3m_sde,
}
# Keyword parameters each sampler function takes from its schedulers.toml table.
KDIFF_PARAMS = ["eta", "s_noise", "r", "solver_type", "order"]


# ---------------------------------------------------------------------------------------------
# The synthetic model functions (the spec is in README.md; keep the two in step).

def model_eps(inp: torch.Tensor, t: float) -> torch.Tensor:
    """Synthetic UNet for the diffusers presets: an elementwise function of the scaled model
    input and the timestep, evaluated in float64 and returned in the input's dtype (float32):

        out = f32( 0.5 * tanh(x) + 0.1 * x * cos(t / 250) ),  x = f64(inp), t = f64(timestep)
    """
    x = inp.to(torch.float64)
    out = 0.5 * torch.tanh(x) + 0.1 * x * math.cos(t / 250.0)
    return out.to(inp.dtype)


def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Synthetic k-diffusion denoiser D(x, sigma), elementwise, float64:

        D(x, s) = 0.9 * x / sqrt(1 + s^2) + 0.05 * tanh(x) * cos(ln(s + 0.001))

    `sigma` is what the samplers pass: a tensor of shape [batch] (here [1])."""
    s = sigma.to(torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
    return 0.9 * x / torch.sqrt(1.0 + s * s) + 0.05 * torch.tanh(x) * torch.cos(torch.log(s + 0.001))


# ---------------------------------------------------------------------------------------------
# helpers

def flat(t) -> list[float]:
    """A tensor/array as a flat C-order list of Python floats (exact float64 values)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().to(torch.float64).numpy()
    return [float(v) for v in np.asarray(t, dtype=np.float64).reshape(-1)]


def fl(v) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().cpu().to(torch.float64).reshape(-1)[0])
    return float(v)


def dump(path: Path, obj) -> None:
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    path.write_text(text + "\n")


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def load_toml() -> dict:
    with open(ROOT / "schedulers.toml", "rb") as f:
        return tomllib.load(f)


def fixed_arrays() -> dict[str, np.ndarray]:
    """X0 (initial noise), IMAGE (img2img latents), NOISE (img2img noise): float32 [1,4,4,4]."""
    return {
        "x0": np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32),
        "image": np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32),
        "noise": np.random.default_rng(2).standard_normal(SHAPE, dtype=np.float32),
    }


# ---------------------------------------------------------------------------------------------
# sigma tables

def sigma_table_f64() -> np.ndarray:
    """sqrt((1 - acp) / acp) for BASE_CONFIG's scaled_linear betas, all in float64."""
    n = BASE_CONFIG["num_train_timesteps"]
    betas = np.linspace(BASE_CONFIG["beta_start"] ** 0.5, BASE_CONFIG["beta_end"] ** 0.5, n,
                        dtype=np.float64) ** 2
    acp = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - acp) / acp)


def sigma_table_diffusers_f32() -> np.ndarray:
    """The table diffusers itself builds (EulerDiscreteScheduler.__init__): float32 torch
    betas, cumprod and sigma, returned as float64 holding those float32 values."""
    s = diffusers.EulerDiscreteScheduler.from_config(BASE_CONFIG)
    acp = s.alphas_cumprod
    assert acp.dtype == torch.float32
    sig = ((1 - acp) / acp) ** 0.5
    return sig.to(torch.float64).numpy()


# ---------------------------------------------------------------------------------------------
# ComfyUI transcriptions (ComfyUI is not installed; these are faithful copies of upstream code,
# with `model_sampling` replaced by the ModelSamplingDiscrete stand-in below).

class ModelSamplingDiscrete:
    """Stand-in for comfy/model_sampling.py ModelSamplingDiscrete (the parts the schedulers
    use): `sigmas` ascending (index = timestep), `sigma_min/max`, `timestep` (quantized:
    nearest log sigma), `sigma` (log-linear interpolation, t cast to float32 as upstream)."""

    def __init__(self, sigmas: torch.Tensor):
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    # comfy/model_sampling.py ModelSamplingDiscrete.timestep
    def timestep(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma.to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    # comfy/model_sampling.py ModelSamplingDiscrete.sigma
    def sigma(self, timestep):
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=(len(self.sigmas) - 1))
        low_idx = t.floor().long()
        high_idx = t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp().to(timestep.device)


# comfy/samplers.py simple_scheduler (output kept in float64 instead of torch.FloatTensor)
def comfy_simple_scheduler(model_sampling, steps):
    s = model_sampling
    sigs = []
    ss = len(s.sigmas) / steps
    for x in range(steps):
        sigs += [float(s.sigmas[-(1 + int(x * ss))])]
    sigs += [0.0]
    return sigs


# comfy/samplers.py ddim_scheduler
def comfy_ddim_scheduler(model_sampling, steps):
    s = model_sampling
    sigs = []
    x = 1
    if math.isclose(float(s.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]

    ss = max(len(s.sigmas) // steps, 1)
    while x < len(s.sigmas):
        sigs += [float(s.sigmas[x])]
        x += ss
    sigs = sigs[::-1]
    return sigs


# comfy/samplers.py normal_scheduler (sgm=True is SCHEDULER_HANDLERS["sgm_uniform"])
def comfy_normal_scheduler(model_sampling, steps, sgm=False, floor=False):
    s = model_sampling
    start = s.timestep(s.sigma_max)
    end = s.timestep(s.sigma_min)

    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)

    sigs = []
    for x in range(len(timesteps)):
        ts = timesteps[x]
        sigs.append(float(s.sigma(ts)))

    if append_zero:
        sigs += [0.0]

    return sigs


# comfy/samplers.py beta_scheduler (Lee et al. 2024, arXiv 2407.12173)
def comfy_beta_scheduler(model_sampling, steps, alpha=0.6, beta=0.6):
    total_timesteps = (len(model_sampling.sigmas) - 1)
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(scipy.stats.beta.ppf(ts, alpha, beta) * total_timesteps)

    sigs = []
    last_t = -1
    for t in ts:
        if t != last_t:
            sigs += [float(model_sampling.sigmas[int(t)])]
        last_t = t
    sigs += [0.0]
    return sigs


# comfy/samplers.py linear_quadratic_schedule (from genmoai mochi_preview/infer.py)
def comfy_linear_quadratic_schedule(model_sampling, steps, threshold_noise=0.025, linear_steps=None):
    if steps == 1:
        sigma_schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear_sigma_schedule = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        threshold_noise_step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = threshold_noise_step_diff / (linear_steps * quadratic_steps ** 2)
        linear_coef = threshold_noise / linear_steps - 2 * threshold_noise_step_diff / (quadratic_steps ** 2)
        const = quadratic_coef * (linear_steps ** 2)
        quadratic_sigma_schedule = [
            quadratic_coef * (i ** 2) + linear_coef * i + const
            for i in range(linear_steps, steps)
        ]
        sigma_schedule = linear_sigma_schedule + quadratic_sigma_schedule + [1.0]
        sigma_schedule = [1.0 - x for x in sigma_schedule]
    # upstream: torch.FloatTensor(sigma_schedule) * model_sampling.sigma_max (float32); float64 here
    return [float(v) * float(model_sampling.sigma_max) for v in sigma_schedule]


# comfy/samplers.py kl_optimal_scheduler (from A1111 PR 15608); upstream uses torch.float
# (float32) for adj_idxs, float64 here. n = 1 divides 0 by 0 upstream (NaN).
def comfy_kl_optimal_scheduler(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    adj_idxs = torch.arange(n, dtype=torch.float64).div_(n - 1)
    sigmas = adj_idxs.new_zeros(n + 1)
    sigmas[:-1] = (adj_idxs * math.atan(sigma_min) + (1 - adj_idxs) * math.atan(sigma_max)).tan_()
    return sigmas


# comfy_extras/nodes_align_your_steps.py loglinear_interp
def comfy_loglinear_interp(t_steps, num_steps):
    """
    Performs log-linear interpolation of a given array of decreasing numbers.
    """
    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(t_steps[::-1])

    new_xs = np.linspace(0, 1, num_steps)
    new_ys = np.interp(new_xs, xs, ys)

    interped_ys = np.exp(new_ys)[::-1].copy()
    return interped_ys


# comfy_extras/nodes_align_your_steps.py NOISE_LEVELS["SDXL"] (to check schedulers.toml against)
COMFY_AYS_SDXL = [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945,
                  0.8620721141, 0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177,
                  0.0291671582]


# comfy_extras/nodes_align_your_steps.py AlignYourStepsScheduler.get_sigmas (denoise = 1.0)
def comfy_align_your_steps(noise_levels, steps):
    sigmas = list(noise_levels)
    if (steps + 1) != len(sigmas):
        sigmas = comfy_loglinear_interp(sigmas, steps + 1)
    sigmas = sigmas[-(steps + 1):]
    sigmas[-1] = 0
    return [float(v) for v in sigmas]


# ---------------------------------------------------------------------------------------------
# schedules.json

SIGMA_SCHEDULE_SOURCES = {
    "normal": "k_diffusion.external.DiscreteSchedule(sigmas, quantize=False).get_sigmas(n) (imported)",
    "karras": "k_diffusion.sampling.get_sigmas_karras(n, sigma_min, sigma_max, rho) (imported)",
    "exponential": "k_diffusion.sampling.get_sigmas_exponential(n, sigma_min, sigma_max) (imported)",
    "polyexponential": "k_diffusion.sampling.get_sigmas_polyexponential(n, sigma_min, sigma_max, rho) (imported)",
    "sgm_uniform": "ComfyUI comfy/samplers.py normal_scheduler(sgm=True) (transcribed)",
    "simple": "ComfyUI comfy/samplers.py simple_scheduler (transcribed)",
    "ddim_uniform": "ComfyUI comfy/samplers.py ddim_scheduler (transcribed)",
    "beta": "ComfyUI comfy/samplers.py beta_scheduler (transcribed; scipy.stats.beta.ppf)",
    "kl_optimal": "ComfyUI comfy/samplers.py kl_optimal_scheduler (transcribed)",
    "linear_quadratic": "ComfyUI comfy/samplers.py linear_quadratic_schedule (transcribed)",
    "align_your_steps": "ComfyUI comfy_extras/nodes_align_your_steps.py AlignYourStepsScheduler.get_sigmas + loglinear_interp (transcribed)",
    "leading": "diffusers EulerDiscreteScheduler(timestep_spacing='leading').set_timesteps (imported)",
    "trailing": "diffusers EulerDiscreteScheduler(timestep_spacing='trailing').set_timesteps (imported)",
    "linspace": "diffusers EulerDiscreteScheduler(timestep_spacing='linspace').set_timesteps (imported)",
}


def schedule_sigmas(kind: str, params: dict, steps: int, table: np.ndarray) -> list[float]:
    """Sigma list (descending, ending with 0) of one schedule on one sigma table, float64."""
    with default_dtype(torch.float64):
        sig_t = torch.from_numpy(table.copy())
        ms = ModelSamplingDiscrete(sig_t)
        smin, smax = float(table[0]), float(table[-1])
        if kind == "normal":
            out = flat(kext.DiscreteSchedule(sig_t, quantize=False).get_sigmas(steps))
            # ComfyUI's normal_scheduler gives the same list (start/end timesteps 999 and 0).
            comfy = comfy_normal_scheduler(ms, steps)
            assert np.allclose(out, comfy, rtol=1e-12, atol=0), (out, comfy)
            return out
        if kind == "karras":
            return flat(ks.get_sigmas_karras(steps, smin, smax, rho=params.get("rho", 7.0)))
        if kind == "exponential":
            return flat(ks.get_sigmas_exponential(steps, smin, smax))
        if kind == "polyexponential":
            return flat(ks.get_sigmas_polyexponential(steps, smin, smax, rho=params.get("rho", 1.0)))
        if kind == "sgm_uniform":
            return comfy_normal_scheduler(ms, steps, sgm=True)
        if kind == "simple":
            return comfy_simple_scheduler(ms, steps)
        if kind == "ddim_uniform":
            return comfy_ddim_scheduler(ms, steps)
        if kind == "beta":
            return comfy_beta_scheduler(ms, steps, alpha=params.get("alpha", 0.6), beta=params.get("beta", 0.6))
        if kind == "kl_optimal":
            if steps == 1:
                raise ValueError("upstream kl_optimal_scheduler divides by n - 1 = 0 for 1 step (NaN sigma)")
            return flat(comfy_kl_optimal_scheduler(steps, smin, smax))
        if kind == "linear_quadratic":
            return comfy_linear_quadratic_schedule(ms, steps, threshold_noise=params.get("threshold_noise", 0.025))
        if kind == "align_your_steps":
            return comfy_align_your_steps(params["sigmas"], steps)
    raise KeyError(kind)


def diffusers_spacing(spacing: str, steps: int, tables: dict[str, np.ndarray]) -> dict:
    s = diffusers.EulerDiscreteScheduler.from_config(BASE_CONFIG, timestep_spacing=spacing)
    s.set_timesteps(steps)
    ts = np.asarray(flat(s.timesteps))
    rec = {"timesteps": [float(v) for v in ts], "sigmas_diffusers": flat(s.sigmas)}
    # The same timesteps mapped through each table in float64 (diffusers: np.interp on sigma).
    for name, table in tables.items():
        rec["sigmas_" + name] = [float(v) for v in np.interp(ts, np.arange(len(table)), table)] + [0.0]
    return rec


def make_schedules(toml: dict) -> dict:
    tables = {"f64": sigma_table_f64(), "diffusers_f32": sigma_table_diffusers_f32()}
    out = {
        "generator": "tools/schedulers/make_scheduler_refs.py",
        "steps": SCHEDULE_STEPS,
        "tables": {},
        "schedules": {},
        "skipped": [],
    }
    for name, table in tables.items():
        with default_dtype(torch.float64):
            ds = kext.DiscreteSchedule(torch.from_numpy(table.copy()), quantize=False)
            probes = torch.tensor(SIGMA_TO_T_PROBES, dtype=torch.float64)
            t_lin = ds.sigma_to_t(probes, quantize=False)
            t_q = ds.sigma_to_t(probes, quantize=True)
            tp = torch.tensor(T_TO_SIGMA_PROBES, dtype=torch.float64)
            # Upstream t_to_sigma casts t to float32 first; all probes are exact in float32.
            s_of_t = ds.t_to_sigma(tp)
        out["tables"][name] = {
            "sigmas": [float(v) for v in table],
            "sigma_min": float(table[0]),
            "sigma_max": float(table[-1]),
            "sigma_to_t": {
                "sigma": list(SIGMA_TO_T_PROBES),
                "t": flat(t_lin),
                "t_quantized": flat(t_q),
            },
            "t_to_sigma": {"t": list(T_TO_SIGMA_PROBES), "sigma": flat(s_of_t)},
        }
    for name, entry in toml["schedules"].items():
        kind = entry["kind"]
        params = {k: v for k, v in entry.items() if k not in ("label", "description", "aliases", "kind")}
        rec = {"kind": kind, "params": params, "source": SIGMA_SCHEDULE_SOURCES.get(kind, "?"), "by_steps": {}}
        for steps in SCHEDULE_STEPS:
            key = str(steps)
            try:
                if kind in ("leading", "trailing", "linspace"):
                    rec["by_steps"][key] = diffusers_spacing(kind, steps, tables)
                else:
                    rec["by_steps"][key] = {
                        "sigmas_" + tn: schedule_sigmas(kind, params, steps, table)
                        for tn, table in tables.items()
                    }
            except ValueError as e:
                out["skipped"].append({"schedule": name, "steps": steps, "reason": str(e)})
        out["schedules"][name] = rec
    return out


# ---------------------------------------------------------------------------------------------
# presets.json

class NoiseRecorder:
    """Records every noise tensor a diffusers scheduler draws: randn_tensor (patched in every
    diffusers.schedulers module namespace) and the Brownian-tree noise sampler of
    DPMSolverSDEScheduler (its __call__, with the (sigma, sigma_next) it was called with)."""

    def __init__(self):
        self.draws: list[dict] = []
        self._patches = []

    def __enter__(self):
        import diffusers.schedulers as dsch
        import diffusers.schedulers.scheduling_dpmsolver_sde as sde_mod

        for mod in list(sys.modules.values()):
            name = getattr(mod, "__name__", "")
            if name.startswith(dsch.__name__ + ".") and hasattr(mod, "randn_tensor"):
                orig = mod.randn_tensor

                def wrapped(*a, _orig=orig, **kw):
                    v = _orig(*a, **kw)
                    self.draws.append({"source": "randn_tensor", "value": flat(v)})
                    return v

                self._patches.append((mod, "randn_tensor", orig))
                mod.randn_tensor = wrapped
        cls = sde_mod.BrownianTreeNoiseSampler
        orig_call = cls.__call__

        def call(ns, sigma, sigma_next, _orig=orig_call):
            v = _orig(ns, sigma, sigma_next)
            self.draws.append({"source": "brownian_tree", "sigma": fl(sigma), "sigma_next": fl(sigma_next),
                               "value": flat(v)})
            return v

        self._patches.append((cls, "__call__", orig_call))
        cls.__call__ = call
        return self

    def __exit__(self, *exc):
        for obj, attr, orig in reversed(self._patches):
            setattr(obj, attr, orig)

    def take(self) -> list[dict]:
        d, self.draws = self.draws, []
        return d


def build_scheduler(cls_name: str, config: dict):
    return getattr(diffusers, cls_name).from_config(BASE_CONFIG, **config)


def extra_step_kwargs(scheduler, generator) -> dict:
    """diffusers' StableDiffusionXLPipeline.prepare_extra_step_kwargs with eta = 0.0."""
    params = set(inspect.signature(scheduler.step).parameters.keys())
    kw = {}
    if "eta" in params:
        kw["eta"] = 0.0
    if "generator" in params:
        kw["generator"] = generator
    return kw


def run_preset(cls_name: str, config: dict, steps: int, x0: np.ndarray, rec: NoiseRecorder) -> dict:
    scheduler = build_scheduler(cls_name, config)
    scheduler.set_timesteps(steps)
    timesteps = flat(scheduler.timesteps)
    sigmas = flat(scheduler.sigmas) if getattr(scheduler, "sigmas", None) is not None else None
    init_noise_sigma = fl(scheduler.init_noise_sigma)
    generator = torch.Generator().manual_seed(GENERATOR_SEED)
    torch.manual_seed(BROWNIAN_TORCH_SEED)  # DPMSolverSDEScheduler seeds its Brownian tree from it
    x = torch.from_numpy(x0.copy()) * scheduler.init_noise_sigma
    x_init = flat(x)
    kw = extra_step_kwargs(scheduler, generator)
    rec.take()
    evals = []
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        out = model_eps(inp, fl(t))
        x = scheduler.step(out, t, x, **kw).prev_sample
        assert x.dtype == torch.float32, x.dtype
        evals.append({"t": fl(t), "model_input": flat(inp), "sample": flat(x), "noise": rec.take()})
    return {
        "timesteps": timesteps,
        "sigmas": sigmas,
        "init_noise_sigma": init_noise_sigma,
        "order": int(scheduler.order),
        "x_init": x_init,
        "evaluations": evals,
        "final": flat(x),
    }


class _Img2ImgHost:
    """What StableDiffusionXLImg2ImgPipeline.get_timesteps needs from `self`."""

    def __init__(self, scheduler):
        self.scheduler = scheduler


def run_img2img(cls_name: str, config: dict, steps: int, strength: float, image: np.ndarray,
                noise: np.ndarray) -> dict:
    scheduler = build_scheduler(cls_name, config)
    scheduler.set_timesteps(steps)
    host = _Img2ImgHost(scheduler)
    timesteps, n = StableDiffusionXLImg2ImgPipeline.get_timesteps(host, steps, strength, "cpu", denoising_start=None)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    noisy = scheduler.add_noise(torch.from_numpy(image.copy()), torch.from_numpy(noise.copy()), timesteps[:1])
    return {
        "steps": steps,
        "strength": strength,
        "t_start": t_start,
        "begin_index": getattr(scheduler, "begin_index", None),
        "num_inference_steps": int(n),
        "timesteps": flat(timesteps),
        "noisy_latents": flat(noisy),
    }


def make_presets(toml: dict, arrays: dict) -> dict:
    out = {
        "generator": "tools/schedulers/make_scheduler_refs.py",
        "shape": SHAPE,
        "x0": flat(arrays["x0"]),
        "img2img_image": flat(arrays["image"]),
        "img2img_noise": flat(arrays["noise"]),
        "generator_seed": GENERATOR_SEED,
        "steps": PRESET_STEPS,
        "presets": {},
        "vpred": {},
        "skipped": [],
    }
    # Resolve every class first: diffusers imports scheduler modules lazily, and NoiseRecorder
    # patches randn_tensor in the modules loaded when it starts.
    for entry in toml["presets"].values():
        if "class" in entry:
            getattr(diffusers, entry["class"])
    with NoiseRecorder() as rec:
        for name, entry in toml["presets"].items():
            if "class" not in entry:
                continue
            cls_name, config = entry["class"], dict(entry.get("config", {}))
            p = {"class": cls_name, "config": config, "runs": {}, "img2img": []}
            for steps in PRESET_STEPS:
                try:
                    p["runs"][str(steps)] = run_preset(cls_name, config, steps, arrays["x0"], rec)
                except Exception as e:  # diffusers rejects the combination
                    out["skipped"].append({"preset": name, "steps": steps, "error": f"{type(e).__name__}: {e}"})
                    rec.take()
            for steps in IMG2IMG_STEPS:
                for strength in IMG2IMG_STRENGTHS:
                    try:
                        p["img2img"].append(run_img2img(cls_name, config, steps, strength, arrays["image"],
                                                        arrays["noise"]))
                    except Exception as e:
                        out["skipped"].append({"preset": name, "img2img_steps": steps, "strength": strength,
                                               "error": f"{type(e).__name__}: {e}"})
            out["presets"][name] = p
            print(f"  preset {name}: {len(p['runs'])} runs", file=sys.stderr)
        for vname, preset, extra in VPRED_CASES:
            entry = toml["presets"][preset]
            cls_name = entry["class"]
            config = {**entry.get("config", {}), **extra}
            out["vpred"][vname] = {
                "preset": preset,
                "class": cls_name,
                "config": config,
                "steps": VPRED_STEPS,
                "run": run_preset(cls_name, config, VPRED_STEPS, arrays["x0"], rec),
            }
    return out


# ---------------------------------------------------------------------------------------------
# samplers.json

class RecordingNoiseSampler:
    """k-diffusion noise_sampler: (sigma, sigma_next) -> torch.randn(shape, float64) from a
    seeded generator; records the arguments and the returned tensor, in call order."""

    def __init__(self, shape, seed):
        self.shape = shape
        self.gen = torch.Generator().manual_seed(seed)
        self.calls = []

    def __call__(self, sigma, sigma_next):
        v = torch.randn(self.shape, generator=self.gen, dtype=torch.float64)
        self.calls.append({"sigma": fl(sigma), "sigma_next": fl(sigma_next), "value": flat(v)})
        return v


@contextlib.contextmanager
def count_randn_like(counter: list):
    """torch.randn_like is what sample_euler/heun/dpm_2 draw their s_churn noise with (every
    step, used only when s_churn > 0, i.e. never here). Counts the calls; values unchanged."""
    orig = torch.randn_like

    def wrapped(*a, **kw):
        counter[0] += 1
        return orig(*a, **kw)

    torch.randn_like = wrapped
    try:
        yield
    finally:
        torch.randn_like = orig


@contextlib.contextmanager
def record_lms_coeffs(store: list):
    orig = ks.linear_multistep_coeff

    def wrapped(order, t, i, j):
        c = orig(order, t, i, j)
        store.append({"order": order, "i": i, "j": j, "coeff": float(c)})
        return c

    ks.linear_multistep_coeff = wrapped
    try:
        yield
    finally:
        ks.linear_multistep_coeff = orig


def run_sampler(fn, params: dict, sigmas: list[float], x0: np.ndarray) -> dict:
    sig = torch.tensor(sigmas, dtype=torch.float64)
    x = torch.from_numpy(x0.astype(np.float64)) * sig[0]
    calls, steps_cb = [], []

    def model(xin, sigma, **kw):
        assert sigma.shape == (xin.shape[0],), sigma.shape
        calls.append({"sigma": fl(sigma), "x": flat(xin)})
        return denoiser(xin, sigma)

    def callback(d):
        steps_cb.append({"i": int(d["i"]), "sigma": fl(d["sigma"]), "sigma_hat": fl(d["sigma_hat"]),
                         "x": flat(d["x"])})

    ns = RecordingNoiseSampler(tuple(x.shape), NOISE_SAMPLER_SEED)
    accepted = set(inspect.signature(fn).parameters)
    kw = {k: v for k, v in params.items() if k in accepted}
    if "noise_sampler" in accepted:
        kw["noise_sampler"] = ns
    counter = [0]
    lms = []
    with count_randn_like(counter), record_lms_coeffs(lms):
        final = fn(model, x.clone(), sig, callback=callback, disable=True, **kw)
    assert final.dtype == torch.float64
    x_init = flat(x)
    # callback's x is the sample at the start of step i, so sample-after-step i is the next one's.
    after = [s["x"] for s in steps_cb[1:]] + [flat(final)]
    assert steps_cb[0]["x"] == x_init
    rec = {
        "sigmas": [float(v) for v in sigmas],
        "kwargs": {k: v for k, v in kw.items() if k != "noise_sampler"},
        "x_init": x_init,
        "model_calls": calls,
        "steps": [{"i": s["i"], "sigma": s["sigma"], "sigma_hat": s["sigma_hat"]} for s in steps_cb],
        "samples_after_step": after,
        "noise_calls": ns.calls,
        "unused_randn_like_draws": counter[0],
        "final": flat(final),
    }
    if lms:
        rec["lms_coeffs"] = lms
    return rec


def make_samplers(toml: dict, arrays: dict) -> dict:
    table = sigma_table_f64()
    out = {
        "generator": "tools/schedulers/make_scheduler_refs.py",
        "shape": SHAPE,
        "x0": flat(arrays["x0"]),
        "sigma_table": "f64 (schedules.json tables.f64)",
        "noise_sampler_seed": NOISE_SAMPLER_SEED,
        "steps": SAMPLER_STEPS,
        "samplers": {},
        "skipped": [],
        "not_covered": [],
    }
    seen: dict[str, str] = {}
    for name, entry in toml["samplers"].items():
        algo = entry["algorithm"]
        fn = KDIFF_ALGORITHMS.get(algo)
        if fn is None:
            out["not_covered"].append({"sampler": name, "algorithm": algo,
                                       "reason": f"k-diffusion {importlib.metadata.version('k-diffusion')} has no sample_{algo}"})
            continue
        params = {k: entry[k] for k in KDIFF_PARAMS if k in entry}
        discard = bool(entry.get("discard_penultimate_sigma", False))
        schedules = list(SAMPLER_SCHEDULES)
        default = entry.get("default_schedule")
        if default and default not in schedules:
            schedules.append(default)
        rec = {"algorithm": algo, "function": f"k_diffusion.sampling.{fn.__name__}", "params": params,
               "discard_penultimate_sigma": discard, "runs": {}}
        # A sampler that is another one under a new name (schedulers.toml's ddim = euler) gets
        # only its default schedule's runs; the rest are the other sampler's.
        key = json.dumps([algo, params, discard], sort_keys=True)
        if key in seen:
            rec["same_as"] = seen[key]
            schedules = [sch for sch in schedules if sch not in SAMPLER_SCHEDULES]
        else:
            seen[key] = name
        for sched in schedules:
            sentry = toml["schedules"][sched]
            sparams = {k: v for k, v in sentry.items() if k not in ("label", "description", "aliases", "kind")}
            for steps in SAMPLER_STEPS:
                lists = {f"{sched}/{steps}": schedule_sigmas(sentry["kind"], sparams, steps, table)}
                if discard:
                    # A1111 / ComfyUI: a schedule of steps + 1, then the penultimate sigma dropped.
                    s1 = torch.tensor(schedule_sigmas(sentry["kind"], sparams, steps + 1, table), dtype=torch.float64)
                    lists[f"{sched}/{steps}/discard_penultimate"] = flat(torch.cat([s1[:-2], s1[-1:]]))
                for key, sigmas in lists.items():
                    try:
                        rec["runs"][key] = run_sampler(fn, params, sigmas, arrays["x0"])
                    except Exception as e:  # k-diffusion itself fails on this sigma list
                        out["skipped"].append({"sampler": name, "run": key, "sigmas": sigmas,
                                               "error": f"{type(e).__name__}: {e}"})
        out["samplers"][name] = rec
        print(f"  sampler {name}: {len(rec['runs'])} runs", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "schedulers")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    diffusers.utils.logging.set_verbosity_error()
    torch.set_num_threads(1)
    versions = {d: importlib.metadata.version(d)
                for d in ("torch", "diffusers", "k-diffusion", "torchsde", "numpy", "scipy")}
    print(f"versions: {versions}", file=sys.stderr)

    toml = load_toml()
    ays = toml["schedules"]["align_your_steps"]["sigmas"]
    if ays != COMFY_AYS_SDXL:
        print("WARNING: schedulers.toml align_your_steps sigmas differ from ComfyUI NOISE_LEVELS['SDXL']",
              file=sys.stderr)

    arrays = fixed_arrays()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sdxl_base_scheduler_config.json").write_text(json.dumps(BASE_CONFIG) + "\n")

    print("schedules ...", file=sys.stderr)
    sched = make_schedules(toml)
    sched["versions"] = versions
    dump(args.out / "schedules.json", sched)

    print("samplers ...", file=sys.stderr)
    samp = make_samplers(toml, arrays)
    samp["versions"] = versions
    dump(args.out / "samplers.json", samp)

    print("presets ...", file=sys.stderr)
    pres = make_presets(toml, arrays)
    pres["versions"] = versions
    dump(args.out / "presets.json", pres)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
