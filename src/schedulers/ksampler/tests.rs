//! Properties every sampler must have, whatever its upstream: exactness on a constant denoiser,
//! the final step to sigma 0, replayable runs. Parity with k-diffusion is in
//! `tests/scheduler_samplers.rs`.

use ndarray::{ArrayD, IxDyn};

use super::comfy::{Ddpm, Ipndm, Lcm};
use super::deis::Deis;
use super::dpm2::Dpm2;
use super::dpmpp_multistep::Dpmpp2m;
use super::euler::{Euler, Heun};
use super::lms::Lms;
use super::uni_pc::{UniPc, UniPcVariant};
use super::*;
use crate::schedulers::config::{BetaSchedule, SchedulerConfig};
use crate::schedulers::noise::ReplayNoise;

fn sdxl() -> TrainingSchedule {
    TrainingSchedule::from_config(&SchedulerConfig {
        beta_start: Some(0.00085),
        beta_end: Some(0.012),
        beta_schedule: Some(BetaSchedule::ScaledLinear),
        ..Default::default()
    })
    .unwrap()
}

fn karras(steps: usize) -> Vec<f64> {
    let schedule = sdxl();
    let mut sigmas =
        crate::schedulers::spacing::karras(schedule.sigma_min(), schedule.sigma_max(), steps, 7.0);
    sigmas.push(0.0);
    sigmas
}

/// Zero noise, as many draws as asked for.
struct Silence;

impl NoiseSource for Silence {
    fn randn(&mut self, shape: &[usize]) -> ArrayD<f32> {
        ArrayD::zeros(IxDyn(shape))
    }
}

const DENOISED: f32 = 0.25;

/// Runs `stepper` like the pipeline with a model whose denoised prediction is always
/// [`DENOISED`]; returns the sample the model saw at every first-stage evaluation and the result.
fn run_constant(stepper: &mut KSampler<impl Method>, x0: f32) -> (Vec<(f64, f32)>, f32) {
    let mut x = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), x0 * stepper.init_noise_sigma() as f32);
    let mut seen = Vec::new();
    for index in 0..stepper.timesteps().len() {
        let eval = stepper.evaluations()[index];
        if eval.stage == Stage::First {
            seen.push((eval.sigma, x[[0, 0, 0, 0]]));
        }
        // epsilon such that x - sigma * eps = DENOISED
        let out = x.mapv(|v| ((f64::from(v) - f64::from(DENOISED)) / eval.sigma) as f32);
        x = stepper.step(&out, index, &x.clone(), &mut Silence).unwrap();
    }
    (seen, x[[0, 0, 0, 0]])
}

fn sampler<M: Method>(method: M, sigmas: Vec<f64>) -> KSampler<M> {
    KSampler::new(method, sigmas, &sdxl(), PredictionType::Epsilon).unwrap()
}

#[test]
fn ode_samplers_follow_the_exact_path_of_a_constant_denoiser() {
    // With D(x, sigma) = c the probability-flow ODE is solved by
    // x(sigma) = c + (x_0 - c) sigma / sigma_0, and every method here is exact on it.
    let sigmas = karras(10);
    let check = |name: &str, (seen, last): (Vec<(f64, f32)>, f32), tolerance: f64| {
        let (sigma_0, x_0) = seen[0];
        for (sigma, x) in seen {
            let exact =
                f64::from(DENOISED) + (f64::from(x_0) - f64::from(DENOISED)) * sigma / sigma_0;
            assert!(
                (f64::from(x) - exact).abs() <= tolerance * exact.abs().max(1.0),
                "{name}: {x} vs {exact} at sigma {sigma}"
            );
        }
        assert!((last - DENOISED).abs() < 1e-5, "{name}: ends at {last}");
    };
    check(
        "euler",
        run_constant(&mut sampler(Euler, sigmas.clone()), 1.0),
        1e-6,
    );
    check(
        "heun",
        run_constant(&mut sampler(Heun::default(), sigmas.clone()), 1.0),
        1e-6,
    );
    check(
        "dpm_2",
        run_constant(&mut sampler(Dpm2::default(), sigmas.clone()), 1.0),
        1e-6,
    );
    check(
        "lms",
        run_constant(&mut sampler(Lms::new(4).unwrap(), sigmas.clone()), 1.0),
        1e-6,
    );
    check(
        "dpmpp_2m",
        run_constant(&mut sampler(Dpmpp2m::default(), sigmas.clone()), 1.0),
        1e-6,
    );
    check(
        "ipndm",
        run_constant(&mut sampler(Ipndm::new(4).unwrap(), sigmas.clone()), 1.0),
        1e-6,
    );
    // DEIS integrates d sigma / d t with upstream's 10000-point Riemann sum (not exact).
    check(
        "deis",
        run_constant(&mut sampler(Deis::new(3).unwrap(), sigmas.clone()), 1.0),
        1e-3,
    );
}

#[test]
fn uni_pc_is_exact_on_a_constant_denoiser_and_stops_at_sigma_0_001() {
    let sigmas = karras(10);
    let mut uni_pc = sampler(UniPc::new(3, UniPcVariant::Bh1).unwrap(), sigmas.clone());
    assert_eq!(
        uni_pc.timesteps().len(),
        10,
        "no evaluation at the final sigma"
    );
    let (seen, last) = run_constant(&mut uni_pc, 1.0);
    let (sigma_0, x_0) = seen[0];
    let exact =
        |sigma: f64| f64::from(DENOISED) + (f64::from(x_0) - f64::from(DENOISED)) * sigma / sigma_0;
    for (sigma, x) in seen {
        assert!(
            (f64::from(x) - exact(sigma)).abs() < 1e-5,
            "{x} at sigma {sigma}"
        );
    }
    assert!((f64::from(last) - exact(0.001)).abs() < 1e-6, "{last}");
}

#[test]
fn ipndm_and_deis_of_order_one_are_euler() {
    let sigmas = karras(7);
    let euler = run_constant(&mut sampler(Euler, sigmas.clone()), -0.7);
    let ipndm = run_constant(&mut sampler(Ipndm::new(1).unwrap(), sigmas.clone()), -0.7);
    let deis = run_constant(&mut sampler(Deis::new(1).unwrap(), sigmas.clone()), -0.7);
    for other in [ipndm, deis] {
        assert!((euler.1 - other.1).abs() < 1e-6);
        for (a, b) in euler.0.iter().zip(&other.0) {
            assert_eq!(a.0, b.0);
            assert!((a.1 - b.1).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn lcm_and_ddpm_end_on_the_denoised_prediction() {
    let sigmas = karras(4);
    let (seen, last) = run_constant(&mut sampler(Lcm, sigmas.clone()), 1.0);
    assert_eq!(last, DENOISED);
    // Without noise LCM's re-noised sample is the prediction itself.
    assert!(seen[1..].iter().all(|&(_, x)| (x - DENOISED).abs() < 1e-6));
    let (_, last) = run_constant(&mut sampler(Ddpm, sigmas), 1.0);
    assert!((last - DENOISED).abs() < 1e-6, "{last}");
}

#[test]
fn lcm_re_noises_to_the_next_sigma() {
    let sigmas = vec![10.0, 2.0, 0.0];
    let mut lcm = sampler(Lcm, sigmas);
    let x = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 10.0_f32);
    let out = x.mapv(|v| (v - DENOISED) / 10.0);
    let noise = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 0.5_f32);
    let mut replay = ReplayNoise::new([noise]);
    let next = lcm.step(&out, 0, &x, &mut replay).unwrap();
    assert!((next[[0, 0, 0, 0]] - (DENOISED + 2.0 * 0.5)).abs() < 1e-6);
    assert_eq!(replay.served, 1);
}

#[test]
fn steps_must_come_in_order_and_index_zero_starts_over() {
    let sigmas = karras(5);
    let mut dpmpp = sampler(Dpmpp2m::default(), sigmas);
    let first = run_constant(&mut dpmpp, 0.3);
    assert_eq!(run_constant(&mut dpmpp, 0.3), first, "a second run replays");
    let x = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0_f32);
    assert!(dpmpp.step(&x, 3, &x, &mut Silence).is_err());
    assert!(dpmpp.step(&x, 99, &x, &mut Silence).is_err());
}

#[test]
fn bad_sigma_lists_are_rejected() {
    let schedule = sdxl();
    let make = |sigmas: Vec<f64>| {
        KSampler::new(Euler, sigmas, &schedule, PredictionType::Epsilon).map(|_| ())
    };
    assert!(make(vec![1.0]).is_err());
    assert!(make(vec![1.0, 2.0, 0.0]).is_err(), "increasing");
    assert!(
        make(vec![1.0, 0.0, 0.0]).is_err(),
        "an evaluation at sigma 0"
    );
    assert!(make(vec![f64::NAN, 0.0]).is_err());
    assert!(make(vec![1.0, 0.5]).is_ok(), "a list may stop above 0");
}
