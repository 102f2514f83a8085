//! Parity of the alpha/sigma (VP) scheduler presets with diffusers 0.39: DPMSolverMultistep,
//! DPMSolverSinglestep, UniPC, DEIS, DDIM, DDPM, PNDM and LCM, built through `build_preset`
//! over SDXL base's scheduler config, against `tests/fixtures/schedulers/presets.json`
//! (made by `tools/schedulers/make_scheduler_refs.py`; format and MODEL in its README).
//!
//! Every trajectory runs freely in float32 from `x_init`, replaying the recorded noise, and
//! each step's sample is compared elementwise relative to `max(|reference|, floor)`, with
//! floor 1e-3, or 1e-2 for the presets that add fresh noise every step (see [`floor`]).

mod common;

use std::sync::OnceLock;

use ndarray::{ArrayD, IxDyn};
use sdxl_backend::Registries;
use sdxl_backend::registry::{PresetDef, PresetKind};
use sdxl_backend::schedulers::{Plan, ReplayNoise, SchedulerConfig, Stepper, build_preset};
use serde_json::Value;

/// The presets this file covers (the VP classes of schedulers.toml).
const PRESETS: &[&str] = &[
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "dpmpp_2m_sde_karras",
    "dpmpp_2s",
    "ddim",
    "ddpm",
    "pndm",
    "unipc",
    "deis",
    "lcm",
];
/// The v-prediction / zero-SNR runs of those presets.
const VPRED: &[&str] = &["dpmpp_2m_v", "ddim_v", "ddim_v_zsnr"];

const TIMESTEP_TOLERANCE: f64 = 1e-3;
const SIGMA_TOLERANCE: f64 = 1e-5;
const SAMPLE_TOLERANCE: f32 = 1e-4;
/// `add_noise` is checked like a sample. (The float32 sigma table equals diffusers' only to one
/// ulp: PyTorch's float32 `sqrt` on this CPU is not correctly rounded, so about a quarter of
/// the entries, and the `sqrt(acp)` factors of DDIM-style `add_noise`, differ by ~1e-7.)
const ADD_NOISE_TOLERANCE: f32 = SAMPLE_TOLERANCE;

/// Where elementwise relative error stops growing as |reference| goes to 0.
///
/// The stochastic presets add fresh unit noise every step with a float32 coefficient that
/// diffusers computes with PyTorch's not correctly rounded `sqrt` / `exp`; a one-ulp difference
/// of such an O(1) term (~1e-7 absolute) on an element near 0 reads as > 1e-4 relative at floor
/// 1e-3, so those presets use 1e-2 (still 1e-6 absolute).
fn floor(preset: &str) -> f32 {
    match preset {
        "dpmpp_2m_sde_karras" | "ddpm" => 1e-2,
        _ => 1e-3,
    }
}

struct Fixture {
    presets: Value,
    sigma_table: Vec<f64>,
    base: SchedulerConfig,
    registries: Registries,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let read = |name: &str| {
            std::fs::read_to_string(common::fixture(&format!("schedulers/{name}")))
                .unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
        };
        let schedules: Value =
            serde_json::from_str(&read("schedules.json")).expect("schedules.json");
        Fixture {
            presets: serde_json::from_str(&read("presets.json")).expect("presets.json"),
            sigma_table: floats(&schedules["tables"]["diffusers_f32"]["sigmas"]),
            base: SchedulerConfig::from_json(&read("sdxl_base_scheduler_config.json"))
                .expect("SDXL base scheduler config"),
            registries: Registries::load(None, None).expect("built-in registries"),
        }
    })
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {value}"))
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// A flat float32 [1, 4, 4, 4] tensor from the JSON.
fn tensor(value: &Value) -> ArrayD<f32> {
    let data = floats(value).into_iter().map(|v| v as f32).collect();
    ArrayD::from_shape_vec(IxDyn(&[1, 4, 4, 4]), data).expect("64 values")
}

/// MODEL of tools/schedulers/README.md: f32(0.5 tanh(x) + (0.1 x) cos(t / 250)) in float64.
fn model_eps(input: &ArrayD<f32>, t: f64) -> ArrayD<f32> {
    let c = (t / 250.0).cos();
    input.mapv(|v| {
        let x = f64::from(v);
        (0.5 * x.tanh() + (0.1 * x) * c) as f32
    })
}

/// The preset, with `config` replacing its overrides when given (the v-prediction runs).
fn preset(name: &str, config: Option<&Value>) -> PresetDef {
    let registry = &fixture().registries.schedulers;
    let mut preset = registry
        .preset(name)
        .unwrap_or_else(|e| panic!("preset {name}: {e}"))
        .clone();
    if let (
        Some(config),
        PresetKind::Diffusers {
            config: overrides, ..
        },
    ) = (config, &mut preset.kind)
    {
        **overrides = serde_json::from_value(config.clone()).expect("override config");
    }
    preset
}

fn build(preset: &PresetDef, steps: usize) -> Box<dyn Stepper> {
    let f = fixture();
    build_preset(preset, &f.registries.schedulers, &f.base, steps)
        .unwrap_or_else(|e| panic!("building {} for {steps} steps: {e}", preset.name))
}

/// Largest elementwise `|got - want| / max(|want|, floor)` (NaN counts as infinite).
fn max_relative(got: &ArrayD<f32>, want: &ArrayD<f32>, floor: f32) -> f32 {
    ndarray::Zip::from(got).and(want).fold(0.0f32, |m, &g, &w| {
        let e = (g - w).abs() / w.abs().max(floor);
        if e.is_nan() { f32::INFINITY } else { m.max(e) }
    })
}

/// Largest errors over a preset's runs.
#[derive(Debug, Default)]
struct Errors {
    timesteps: f64,
    sigmas: f64,
    samples: f32,
    add_noise: f32,
}

/// Checks one RUN: plan, initial sample, every step's sample and noise draw count.
fn check_run(label: &str, floor: f32, stepper: &mut dyn Stepper, run: &Value, errors: &mut Errors) {
    let timesteps = floats(&run["timesteps"]);
    assert_eq!(
        stepper.timesteps().len(),
        timesteps.len(),
        "{label}: timesteps"
    );
    for (got, want) in stepper.timesteps().iter().zip(&timesteps) {
        errors.timesteps = errors.timesteps.max((got - want).abs());
    }
    // One sigma per step plus the final one; PNDM's warm-up repeats a timestep without
    // adding a step, so its steps are the distinct timesteps.
    let mut step_timesteps = timesteps.clone();
    step_timesteps.dedup();
    assert_eq!(
        stepper.sigmas().len(),
        step_timesteps.len() + 1,
        "{label}: sigmas"
    );

    // The classes without `sigmas` report the training table's sigma at each step's timestep.
    let want_sigmas = match &run["sigmas"] {
        Value::Null => {
            let table = &fixture().sigma_table;
            let mut sigmas: Vec<f64> = step_timesteps.iter().map(|&t| table[t as usize]).collect();
            sigmas.push(0.0);
            sigmas
        }
        sigmas => floats(sigmas),
    };
    assert_eq!(stepper.sigmas().len(), want_sigmas.len(), "{label}: sigmas");
    for (got, want) in stepper.sigmas().iter().zip(&want_sigmas) {
        errors.sigmas = errors
            .sigmas
            .max((got - want).abs() / want.abs().max(1e-12));
    }
    assert_eq!(
        stepper.init_noise_sigma(),
        run["init_noise_sigma"].as_f64().unwrap(),
        "{label}"
    );
    assert_eq!(
        stepper.order() as u64,
        run["order"].as_u64().unwrap(),
        "{label}: order"
    );

    let evaluations = run["evaluations"].as_array().expect("evaluations");
    let draws = evaluations
        .iter()
        .flat_map(|e| e["noise"].as_array().expect("noise").iter())
        .map(|draw| tensor(&draw["value"]));
    let mut noise = ReplayNoise::new(draws);
    let mut x = tensor(&run["x_init"]);
    for (i, evaluation) in evaluations.iter().enumerate() {
        let input = stepper.scale_model_input(&x, i).expect("scale_model_input");
        let error = max_relative(&input, &tensor(&evaluation["model_input"]), floor);
        assert!(
            error <= SAMPLE_TOLERANCE,
            "{label}: model input {i} off by {error:e}"
        );
        let output = model_eps(&input, stepper.timesteps()[i]);
        let served = noise.served;
        x = stepper.step(&output, i, &x, &mut noise).expect("step");
        let drawn = evaluation["noise"].as_array().unwrap().len();
        assert_eq!(
            noise.served - served,
            drawn,
            "{label}: noise draws in step {i}"
        );
        let error = max_relative(&x, &tensor(&evaluation["sample"]), floor);
        assert!(
            error <= SAMPLE_TOLERANCE,
            "{label}: step {i} sample off by {error:e}"
        );
        errors.samples = errors.samples.max(error);
    }
}

/// Checks the img2img slices and `add_noise` of a preset.
fn check_img2img(name: &str, preset: &PresetDef, cases: &Value, errors: &mut Errors) {
    let f = fixture();
    let image = tensor(&f.presets["img2img_image"]);
    let noise = tensor(&f.presets["img2img_noise"]);
    for case in cases.as_array().expect("img2img") {
        let steps = case["steps"].as_u64().unwrap() as usize;
        let label = format!(
            "{name} img2img {steps} steps, strength {}",
            case["strength"]
        );
        let stepper = build(preset, steps);
        let begin = case["t_start"].as_u64().unwrap() as usize * stepper.order();
        if let Some(index) = case["begin_index"].as_u64() {
            assert_eq!(begin, index as usize, "{label}: begin index");
        }
        let want = floats(&case["timesteps"]);
        assert_eq!(
            &stepper.timesteps()[begin..],
            &want[..],
            "{label}: timesteps"
        );
        let noisy = stepper.add_noise(&image, &noise, begin).expect("add_noise");
        let error = max_relative(&noisy, &tensor(&case["noisy_latents"]), 1e-3);
        assert!(
            error <= ADD_NOISE_TOLERANCE,
            "{label}: add_noise off by {error:e}"
        );
        errors.add_noise = errors.add_noise.max(error);
    }
}

#[test]
fn presets_match_diffusers_at_every_step_count() {
    let f = fixture();
    for &name in PRESETS {
        let reference = &f.presets["presets"][name];
        let preset = preset(name, None);
        assert_eq!(
            serde_json::to_value(&preset.kind).unwrap()["class"],
            reference["class"],
            "{name}: class"
        );
        let runs = reference["runs"].as_object().expect("runs");
        assert_eq!(runs.len(), 8, "{name}: every step count of the fixture");
        let mut errors = Errors::default();
        for (steps, run) in runs {
            let mut stepper = build(&preset, steps.parse().unwrap());
            check_run(
                &format!("{name} {steps} steps"),
                floor(name),
                stepper.as_mut(),
                run,
                &mut errors,
            );
        }
        check_img2img(name, &preset, &reference["img2img"], &mut errors);
        assert!(errors.timesteps <= TIMESTEP_TOLERANCE, "{name}: {errors:?}");
        assert!(errors.sigmas <= SIGMA_TOLERANCE, "{name}: {errors:?}");
        println!("{name}: {errors:?}");
    }
}

#[test]
fn v_prediction_and_zero_snr_runs_match_diffusers() {
    let f = fixture();
    for &name in VPRED {
        let reference = &f.presets["vpred"][name];
        let preset = preset(
            reference["preset"].as_str().unwrap(),
            Some(&reference["config"]),
        );
        let steps = reference["steps"].as_u64().unwrap() as usize;
        let mut stepper = build(&preset, steps);
        let mut errors = Errors::default();
        let run = &reference["run"];
        if name.ends_with("zsnr") {
            // Zero terminal SNR: the first timestep's sigma is the clamped ~4096, not infinity.
            assert!(
                (stepper.sigmas()[0] - 4096.0).abs() < 1e-3,
                "{}",
                stepper.sigmas()[0]
            );
            let mut run = run.clone();
            run["sigmas"] = serde_json::to_value(stepper.sigmas()).unwrap();
            check_run(name, floor(name), stepper.as_mut(), &run, &mut errors);
        } else {
            check_run(name, floor(name), stepper.as_mut(), run, &mut errors);
        }
        assert!(errors.timesteps <= TIMESTEP_TOLERANCE, "{name}: {errors:?}");
        assert!(errors.sigmas <= SIGMA_TOLERANCE, "{name}: {errors:?}");
        println!("{name}: {errors:?}");
    }
}

#[test]
fn img2img_steps_start_with_empty_multistep_state() {
    // Stepping from a begin index equals a fresh run of the tail: the state resets whenever a
    // step does not continue the previous one, so a reused stepper behaves like a new one.
    let x0 = tensor(&fixture().presets["x0"]);
    for &name in PRESETS {
        let preset = preset(name, None);
        let run = |stepper: &mut dyn Stepper, from: usize| {
            let mut x = x0.clone();
            let mut noise = ReplayNoise::new((0..40).map(|_| x0.clone()));
            for i in from..stepper.timesteps().len() {
                let output = model_eps(&x, stepper.timesteps()[i]);
                x = stepper.step(&output, i, &x, &mut noise).unwrap();
            }
            x
        };
        let mut fresh = build(&preset, 10);
        let mut reused = build(&preset, 10);
        run(reused.as_mut(), 0);
        assert_eq!(run(reused.as_mut(), 4), run(fresh.as_mut(), 4), "{name}");
    }
}

#[test]
fn plans_at_ten_steps() {
    for &name in PRESETS {
        let stepper = build(&preset(name, None), 10);
        insta::assert_json_snapshot!(format!("plan_{name}"), Plan::of(stepper.as_ref()));
    }
}
