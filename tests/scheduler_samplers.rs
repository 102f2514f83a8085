//! Parity of the sigma schedules and the k-diffusion samplers with the reference data in
//! `tests/fixtures/schedulers/` (made by `tools/schedulers/make_scheduler_refs.py`, format in
//! `tools/schedulers/README.md`): `schedules.json` (every schedule of `schedulers.toml` at several
//! step counts) and `samplers.json` (every k-diffusion sampler over karras / exponential /
//! normal, driven by a synthetic denoiser and a recorded noise stream).
//!
//! The samplers are driven exactly as the pipeline drives any `Stepper`: one call of
//! `scale_model_input` and `step` per listed timestep, the noise replayed through `ReplayNoise`.
//! The reference denoiser is `D(x, sigma)` (k-diffusion calls `model(x, sigma)`), while a
//! `Stepper` consumes UNet outputs, so the fake UNet returns the epsilon that
//! `predicted_original(Epsilon, ...)` turns back into `D`: `out = (x - D(x, sigma)) / sigma` for
//! the unscaled sample `x`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ndarray::{ArrayD, IxDyn};
use sdxl_backend::registry::{Registries, SchedulerRegistry, SourceFile};
use sdxl_backend::schedulers::config::PredictionType;
use sdxl_backend::schedulers::ksampler::{
    KSampler, Stage, build_sampling, discard_penultimate_sigma, method,
};
use sdxl_backend::schedulers::sigmas::sigmas_for_model;
use sdxl_backend::schedulers::training::TrainingSchedule;
use sdxl_backend::schedulers::{ReplayNoise, SchedulerConfig, Stepper, build_preset};
use serde_json::Value;

/// Sigma lists: relative error bound.
const SIGMA_TOLERANCE: f64 = 1e-5;
/// Samples: error bound relative to `max(|reference|, SAMPLE_FLOOR * max |reference|)` per
/// element, `max` over the tensor. The `Stepper` state is float32 (and so is the replayed
/// noise), so every element carries float32 rounding of the tensor's scale (~6e-8 of it);
/// measured against `max(|reference|, 1e-3)` alone, elements near 0 in a tensor of scale ~5
/// show up to 3e-4 from that rounding only (the table prints both).
const SAMPLE_TOLERANCE: f64 = 1e-4;
/// See [`SAMPLE_TOLERANCE`].
const SAMPLE_FLOOR: f64 = 1e-2;

fn load(name: &str) -> Value {
    let path = common::fixture(&format!("schedulers/{name}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(value: &Value) -> Vec<f64> {
    serde_json::from_value(value.clone()).expect("an array of numbers")
}

fn registry() -> SchedulerRegistry {
    Registries::load(None, None)
        .expect("built-in registries")
        .schedulers
}

/// SDXL base 1.0's scheduler config, as the reference data used it.
fn sdxl_config() -> SchedulerConfig {
    let path = common::fixture("schedulers/sdxl_base_scheduler_config.json");
    SchedulerConfig::from_json(&std::fs::read_to_string(path).expect("config fixture"))
        .expect("valid config")
}

/// Largest `|got - want| / |want|` (0 where both are 0); lengths must agree.
fn max_relative_error(got: &[f64], want: &[f64], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if *w == 0.0 {
                g.abs()
            } else {
                (g - w).abs() / w.abs()
            }
        })
        .fold(0.0, f64::max)
}

/// Sample errors: `(scaled, plain)`, the largest `|got - want| / max(|want|, SAMPLE_FLOOR *
/// max |want|)` and the largest `|got - want| / max(|want|, 1e-3)`.
#[derive(Debug, Clone, Copy, Default)]
struct SampleError {
    scaled: f64,
    plain: f64,
}

impl SampleError {
    fn of(got: &ArrayD<f32>, want: &[f64]) -> Self {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0_f64, |m, w| m.max(w.abs()));
        let mut error = Self::default();
        for (g, w) in got.iter().zip(want) {
            let diff = (f64::from(*g) - w).abs();
            error.scaled = error.scaled.max(diff / w.abs().max(SAMPLE_FLOOR * scale));
            error.plain = error.plain.max(diff / w.abs().max(1e-3));
        }
        error
    }

    fn max(self, other: Self) -> Self {
        Self {
            scaled: self.scaled.max(other.scaled),
            plain: self.plain.max(other.plain),
        }
    }
}

/// The reference's synthetic denoiser (tools/schedulers/README.md), in f64.
fn denoiser(x: f64, sigma: f64) -> f64 {
    0.9 * x / (1.0 + sigma * sigma).sqrt() + 0.05 * x.tanh() * (sigma + 0.001).ln().cos()
}

fn tensor(shape: &[usize], values: &[f64]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values.iter().map(|&v| v as f32).collect())
        .expect("shape matches")
}

#[test]
fn every_schedule_matches_the_reference_sigmas() {
    let reference = load("schedules.json");
    let registry = registry();
    let config = sdxl_config();
    let mut report = String::new();
    let mut worst = 0.0_f64;
    let schedules = reference["schedules"].as_object().expect("schedules");
    assert_eq!(
        schedules.len(),
        registry.schedules().count(),
        "every schedule has reference data"
    );
    for (name, entry) in schedules {
        let kind = &registry.schedule(name).expect("schedule in registry").kind;
        let mut max_error = 0.0_f64;
        for (steps, by_steps) in entry["by_steps"].as_object().expect("by_steps") {
            let steps: usize = steps.parse().expect("step count");
            // diffusers' own float32 sigmas where diffusers made the list, else the list on
            // diffusers' float32 table (the table `TrainingSchedule` reproduces).
            let want = floats(
                by_steps
                    .get("sigmas_diffusers")
                    .unwrap_or(&by_steps["sigmas_diffusers_f32"]),
            );
            let got = sigmas_for_model(steps, &config, kind).expect("sigmas");
            let error = max_relative_error(&got, &want, &format!("{name} x {steps}"));
            max_error = max_error.max(error);
        }
        writeln!(report, "{name:18} {max_error:.1e}").unwrap();
        worst = worst.max(max_error);
    }
    println!("schedule           max relative sigma error\n{report}");
    assert!(
        worst <= SIGMA_TOLERANCE,
        "sigma error {worst:.2e} over {SIGMA_TOLERANCE:.0e}:\n{report}"
    );
}

/// One reference run of a sampler: our sigma list for it compared with the run's, then the
/// sampler driven over the run's sigmas. Returns (sigma error, sample error).
///
/// The runs' lists are built on the float64 sigma table, ours on diffusers' float32 table (what
/// `TrainingSchedule` reproduces and `schedules.json` checks to 1e-5); the two tables differ by
/// `table_gap` (1.3e-5 at sigma_min), which the sigma comparison allows for.
fn check_run(
    registry: &SchedulerRegistry,
    sampler: &str,
    run_key: &str,
    run: &Value,
    shape: &[usize],
    x0: &[f64],
    table_gap: f64,
) -> (f64, SampleError) {
    let config = sdxl_config();
    let def = registry.sampler(sampler).expect("sampler in registry");
    let mut parts = run_key.split('/');
    let schedule = parts.next().expect("schedule");
    let steps: usize = parts.next().expect("steps").parse().expect("step count");
    let discard = parts.next() == Some("discard_penultimate");
    let what = format!("{sampler} {run_key}");

    // Our own sigma list for this run, the way `build_sampling` makes it.
    let kind = &registry.schedule(schedule).expect("schedule").kind;
    let mut ours = sigmas_for_model(steps + usize::from(discard), &config, kind).expect("sigmas");
    if discard {
        ours = discard_penultimate_sigma(ours);
    }
    let sigmas = floats(&run["sigmas"]);
    let sigma_error = max_relative_error(&ours, &sigmas, &what);
    assert!(
        sigma_error <= SIGMA_TOLERANCE + table_gap,
        "{what}: sigmas {ours:?} vs {sigmas:?}"
    );

    let training = TrainingSchedule::from_config(&config).expect("training schedule");
    let mut stepper = KSampler::new(
        method(def).expect("method"),
        sigmas.clone(),
        &training,
        PredictionType::Epsilon,
    )
    .expect("stepper");
    let evaluations = stepper.evaluations().to_vec();
    let calls = run["model_calls"].as_array().expect("model_calls");
    assert_eq!(evaluations.len(), calls.len(), "{what}: model evaluations");
    assert_eq!(stepper.timesteps().len(), evaluations.len(), "{what}");

    let draws: Vec<ArrayD<f32>> = run["noise_calls"]
        .as_array()
        .expect("noise_calls")
        .iter()
        .map(|call| tensor(shape, &floats(&call["value"])))
        .collect();
    let expected_draws = draws.len();
    let mut noise = ReplayNoise::new(draws);

    let after_step: Vec<Vec<f64>> = run["samples_after_step"]
        .as_array()
        .expect("samples_after_step")
        .iter()
        .map(floats)
        .collect();
    let mut x = tensor(shape, x0) * stepper.init_noise_sigma() as f32;
    let mut sample_error = SampleError::of(&x, &floats(&run["x_init"]));
    for (index, eval) in evaluations.iter().enumerate() {
        let call_sigma = calls[index]["sigma"].as_f64().expect("sigma");
        assert!(
            (eval.sigma - call_sigma).abs() <= 1e-9 * call_sigma,
            "{what}: evaluation {index} at sigma {} vs {call_sigma}",
            eval.sigma
        );
        // The sample the model sees, including the intermediate points of two-stage steps.
        sample_error = sample_error.max(SampleError::of(&x, &floats(&calls[index]["x"])));
        let scaled = stepper.scale_model_input(&x, index).expect("scale");
        let scale = (eval.sigma * eval.sigma + 1.0).sqrt();
        let sigma = eval.sigma;
        let unet_output = scaled.mapv(|v| {
            let x = f64::from(v) * scale;
            ((x - denoiser(x, sigma)) / sigma) as f32
        });
        x = stepper
            .step(&unet_output, index, &x, &mut noise)
            .expect("step");
        let step_done = evaluations
            .get(index + 1)
            .is_none_or(|next| next.stage == Stage::First);
        if step_done {
            sample_error = sample_error.max(SampleError::of(&x, &after_step[eval.step]));
        }
    }
    sample_error = sample_error.max(SampleError::of(&x, &floats(&run["final"])));
    assert_eq!(noise.served, expected_draws, "{what}: noise draws");
    assert_eq!(noise.remaining(), 0, "{what}: noise draws left over");
    (sigma_error, sample_error)
}

#[test]
fn every_k_diffusion_sampler_matches_the_reference_runs() {
    let reference = load("samplers.json");
    let registry = registry();
    let shape: Vec<usize> = serde_json::from_value(reference["shape"].clone()).expect("shape");
    let x0 = floats(&reference["x0"]);
    let tables = &load("schedules.json")["tables"];
    let table_gap = max_relative_error(
        &floats(&tables["diffusers_f32"]["sigmas"]),
        &floats(&tables["f64"]["sigmas"]),
        "sigma tables",
    );
    // (sampler, schedule) -> (max sigma error, max sample error) over step counts.
    let mut table: BTreeMap<(String, String), (f64, SampleError)> = BTreeMap::new();
    for (sampler, entry) in reference["samplers"].as_object().expect("samplers") {
        for (run_key, run) in entry["runs"].as_object().expect("runs") {
            let (sigma_error, sample_error) =
                check_run(&registry, sampler, run_key, run, &shape, &x0, table_gap);
            let schedule = run_key.split('/').next().unwrap_or_default().to_string();
            let schedule = if run_key.ends_with("discard_penultimate") {
                format!("{schedule} (discard)")
            } else {
                schedule
            };
            let cell = table.entry((sampler.clone(), schedule)).or_default();
            cell.0 = cell.0.max(sigma_error);
            cell.1 = cell.1.max(sample_error);
        }
    }
    let mut report =
        String::from("sampler             schedule               sigmas  samples  (floor 1e-3)\n");
    for ((sampler, schedule), (sigma_error, sample_error)) in &table {
        writeln!(
            report,
            "{sampler:19} {schedule:22} {sigma_error:7.1e} {:7.1e}  {:7.1e}",
            sample_error.scaled, sample_error.plain
        )
        .unwrap();
    }
    println!("sigma table gap (f64 vs diffusers f32): {table_gap:.2e}\n{report}");
    let worst = table.values().map(|c| c.1.scaled).fold(0.0, f64::max);
    assert!(worst <= SAMPLE_TOLERANCE, "samples:\n{report}");
}

#[test]
fn schedule_sigmas_at_ten_steps() {
    let registry = registry();
    let config = sdxl_config();
    let mut table = String::new();
    for def in registry.schedules() {
        let sigmas = sigmas_for_model(10, &config, &def.kind).expect("sigmas");
        let values: Vec<String> = sigmas.iter().map(|s| format!("{s:.6}")).collect();
        writeln!(table, "{:17} {}", def.name, values.join(" ")).unwrap();
    }
    insta::assert_snapshot!(table);
}

#[test]
fn every_sampler_builds_over_every_schedule() {
    let registry = registry();
    let config = sdxl_config();
    for sampler in registry.samplers() {
        for schedule in registry.schedules() {
            for steps in [1, 2, 3, 10, 30] {
                let built = build_sampling(
                    &registry,
                    &sampler.name,
                    Some(&schedule.name),
                    &config,
                    steps,
                    1.0,
                );
                let what = format!("{} x {} x {steps}", sampler.name, schedule.name);
                if sampler.name == "uni_pc" && steps == 1 {
                    assert!(built.is_err(), "{what}: uni_pc needs 2 steps");
                    continue;
                }
                let stepper = built.unwrap_or_else(|e| panic!("{what}: {e}"));
                let sigmas = stepper.sigmas();
                assert_eq!(sigmas.last(), Some(&0.0), "{what}");
                assert_eq!(stepper.init_noise_sigma(), sigmas[0], "{what}");
                assert!(
                    stepper.timesteps().len() >= sigmas.len() - 2,
                    "{what}: one timestep per model evaluation"
                );
            }
        }
    }
}

#[test]
fn img2img_runs_the_tail_of_a_longer_schedule() {
    let registry = registry();
    let config = sdxl_config();
    let full = build_sampling(&registry, "euler", Some("karras"), &config, 20, 1.0).unwrap();
    let half = build_sampling(&registry, "euler", Some("karras"), &config, 10, 0.5).unwrap();
    assert_eq!(half.sigmas(), &full.sigmas()[10..]);
    // DPM2 discards the penultimate sigma of the longer list too.
    let dpm2 = build_sampling(&registry, "dpm_2", Some("normal"), &config, 4, 0.4).unwrap();
    let longer = sigmas_for_model(11, &config, &registry.schedule("normal").unwrap().kind).unwrap();
    let longer = discard_penultimate_sigma(longer);
    assert_eq!(dpm2.sigmas(), &longer[longer.len() - 5..]);
    // add_noise is original + noise * sigma.
    let original = ArrayD::from_elem(IxDyn(&[1, 1, 1, 2]), 1.0_f32);
    let noise = ArrayD::from_elem(IxDyn(&[1, 1, 1, 2]), 2.0_f32);
    let noised = half.add_noise(&original, &noise, 0).unwrap();
    assert!((f64::from(noised[[0, 0, 0, 0]]) - (1.0 + 2.0 * half.sigmas()[0])).abs() < 1e-5);
    assert!(build_sampling(&registry, "euler", None, &config, 10, 0.0).is_err());
}

#[test]
fn a_sampling_preset_builds_its_sampler_and_schedule() {
    let user = SourceFile {
        name: "user.toml".into(),
        text: "[presets.dpmpp_2m_karras_k]\nlabel = \"DPM++ 2M Karras (k-diffusion)\"\n\
               description = \"k-diffusion DPM++ 2M over Karras sigmas.\"\n\
               sampler = \"dpmpp_2m\"\nschedule = \"karras\"\n"
            .into(),
    };
    let builtin = SourceFile::builtin(
        "schedulers.toml",
        sdxl_backend::registry::BUILTIN_SCHEDULERS_TOML,
    );
    let registry = SchedulerRegistry::from_sources(&[builtin, user]).expect("registry");
    let preset = registry.preset("dpmpp_2m_karras_k").expect("preset");
    let config = sdxl_config();
    let stepper = build_preset(preset, &registry, &config, 10).expect("stepper");
    let direct = build_sampling(&registry, "dpmpp_2m", Some("karras"), &config, 10, 1.0).unwrap();
    assert_eq!(stepper.sigmas(), direct.sigmas());
    assert_eq!(stepper.timesteps(), direct.timesteps());
    assert_eq!(stepper.timesteps().len(), 10);
}

#[test]
fn unknown_names_are_errors_that_list_the_valid_ones() {
    let registry = registry();
    let config = sdxl_config();
    let error = build_sampling(&registry, "dpmpp2m", None, &config, 10, 1.0)
        .err()
        .expect("an error")
        .to_string();
    assert!(error.contains("dpmpp_2m"), "{error}");
}
