//! diffusers `DPMSolverMultistepScheduler`: DPM-Solver (Lu et al. 2022, arXiv:2206.00927) and
//! DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095), multistep, orders 1 to 3, ODE and SDE
//! variants. The per-step update coefficients are shared with the singlestep class.

use super::config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, SolverType,
    TimestepSpacing,
};
use super::noise::NoiseSource;
use super::spacing::{SigmaConversion, linspace, round_half_even};
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::training::TrainingSchedule;
use super::vp::{
    History, X0Guard, alpha_sigma, combine, data_prediction, kept, lambda, noise_prediction,
    reject_unmodelled, solver_plan, solver_timesteps, training_schedule,
};

const CLASS: &str = "DPMSolverMultistepScheduler";

/// The DPM-Solver family member a config selects (`algorithm_type`; diffusers maps `deis` to
/// `dpmsolver++`).
pub fn dpm_algorithm(config: &SchedulerConfig) -> AlgorithmType {
    match config
        .algorithm_type
        .unwrap_or(AlgorithmType::DpmSolverPlusPlus)
    {
        AlgorithmType::Deis => AlgorithmType::DpmSolverPlusPlus,
        other => other,
    }
}

/// Whether the solver integrates the data prediction (the `++` variants) rather than the noise.
pub fn predicts_data(algorithm: AlgorithmType) -> bool {
    matches!(
        algorithm,
        AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus
    )
}

/// Whether the solver adds fresh noise every step.
pub fn is_sde(algorithm: AlgorithmType) -> bool {
    matches!(
        algorithm,
        AlgorithmType::SdeDpmSolverPlusPlus | AlgorithmType::SdeDpmSolver
    )
}

/// Whether the second-order update is Heun's (`solver_type = "heun"`) rather than the midpoint
/// one (every other value, as diffusers maps `logrho` / `bh1` / `bh2` to `midpoint`).
pub fn uses_heun(config: &SchedulerConfig) -> bool {
    config.solver_type == Some(SolverType::Heun)
}

/// Coefficients of one DPM-Solver update of a sample at noise level `sigma_s` to `sigma_t`:
/// x_t = sample * x + d0 * D0 + d1 * D1 + d2 * D2 + noise * z, with D0, D1, D2 the zeroth,
/// first and second divided differences of the model outputs (diffusers
/// `dpm_solver_first_order_update`, `multistep_dpm_solver_{second,third}_order_update`). The
/// midpoint second-order rule uses `0.5 * d0` for D1 instead of `d1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateCoefficients {
    /// Factor on the current sample.
    pub sample: f64,
    /// Factor on D0.
    pub d0: f64,
    /// Factor on D1 (Heun and third order).
    pub d1: f64,
    /// Factor on D2 (third order).
    pub d2: f64,
    /// Factor on fresh noise (SDE variants).
    pub noise: f64,
    /// lambda_t - lambda_s.
    pub h: f64,
}

/// The update coefficients of `algorithm` from `sigma_s` to `sigma_t`.
pub fn update_coefficients(
    algorithm: AlgorithmType,
    sigma_s: f64,
    sigma_t: f64,
) -> UpdateCoefficients {
    let (alpha_t, sigma_t_vp) = alpha_sigma(sigma_t);
    let (alpha_s, sigma_s_vp) = alpha_sigma(sigma_s);
    let h = lambda(sigma_t) - lambda(sigma_s);
    let (em, ep) = ((-h).exp(), h.exp());
    let e2 = (-2.0 * h).exp();
    let (sample, d0, d1, d2, noise) = match algorithm {
        AlgorithmType::DpmSolverPlusPlus | AlgorithmType::Deis => (
            sigma_t_vp / sigma_s_vp,
            -(alpha_t * (em - 1.0)),
            alpha_t * ((em - 1.0) / h + 1.0),
            -(alpha_t * ((em - 1.0 + h) / (h * h) - 0.5)),
            0.0,
        ),
        AlgorithmType::SdeDpmSolverPlusPlus => (
            sigma_t_vp / sigma_s_vp * em,
            alpha_t * (1.0 - e2),
            alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0),
            alpha_t * ((1.0 - e2 - 2.0 * h) / (2.0 * h).powi(2) - 0.5),
            sigma_t_vp * (1.0 - e2).sqrt(),
        ),
        AlgorithmType::DpmSolver => (
            alpha_t / alpha_s,
            -(sigma_t_vp * (ep - 1.0)),
            -(sigma_t_vp * ((ep - 1.0) / h - 1.0)),
            -(sigma_t_vp * ((ep - 1.0 - h) / (h * h) - 0.5)),
            0.0,
        ),
        AlgorithmType::SdeDpmSolver => (
            alpha_t / alpha_s,
            -2.0 * (sigma_t_vp * (ep - 1.0)),
            -2.0 * (sigma_t_vp * ((ep - 1.0) / h - 1.0)),
            f64::NAN,
            sigma_t_vp * ((2.0 * h).exp() - 1.0).sqrt(),
        ),
    };
    UpdateCoefficients {
        sample,
        d0,
        d1,
        d2,
        noise,
        h,
    }
}

/// diffusers `convert_model_output` of the DPM-Solver classes: the data prediction (guarded)
/// for the `++` variants, the noise prediction otherwise (thresholded through x0).
pub fn convert_model_output(
    algorithm: AlgorithmType,
    prediction: PredictionType,
    guard: X0Guard,
    model_output: &Sample,
    sample: &Sample,
    sigma: f64,
) -> Sample {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    if predicts_data(algorithm) {
        return guard.apply(data_prediction(
            prediction,
            model_output,
            sample,
            alpha_t,
            sigma_t,
        ));
    }
    let epsilon = noise_prediction(prediction, model_output, sample, alpha_t, sigma_t);
    if guard == X0Guard::None {
        return epsilon;
    }
    let x0 = data_prediction(PredictionType::Epsilon, &epsilon, sample, alpha_t, sigma_t);
    let x0 = guard.apply(x0);
    noise_prediction(PredictionType::Sample, &x0, sample, alpha_t, sigma_t)
}

/// Checks shared by both DPM-Solver classes: options diffusers rejects or this crate does not
/// model.
pub fn check_dpm_config(config: &SchedulerConfig, class: &str) -> Result<(), SchedulerError> {
    reject_unmodelled(
        config,
        class,
        &[
            "use_flow_sigmas",
            "use_dynamic_shifting",
            "lambda_min_clipped",
        ],
    )?;
    if let Some(variance @ ("learned" | "learned_range")) = config.variance_type.as_deref() {
        return Err(SchedulerError::Unsupported(format!(
            "{class} with variance_type = \"{variance}\""
        )));
    }
    let algorithm = dpm_algorithm(config);
    let final_zero =
        config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero) == FinalSigmasType::Zero;
    if !predicts_data(algorithm) && final_zero {
        return Err(SchedulerError::Config(format!(
            "{class}: final_sigmas_type = \"zero\" is not supported for algorithm_type {algorithm:?}; use \"sigma_min\""
        )));
    }
    Ok(())
}

/// The final sigma of the DPM-Solver classes (`final_sigmas_type`).
pub fn dpm_final_sigma(config: &SchedulerConfig, schedule: &TrainingSchedule) -> f64 {
    match config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero) {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => schedule.sigma_min(),
    }
}

/// `DPMSolverMultistepScheduler` configured for a number of steps.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    algorithm: AlgorithmType,
    prediction: PredictionType,
    guard: X0Guard,
    solver_order: usize,
    heun: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    history: History,
}

impl DpmSolverMultistep {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        check_dpm_config(config, CLASS)?;
        let algorithm = dpm_algorithm(config);
        let solver_order = config.solver_order.unwrap_or(2) as usize;
        if solver_order == 0 {
            return Err(SchedulerError::Config(format!(
                "{CLASS}: solver_order must be at least 1"
            )));
        }
        if algorithm == AlgorithmType::SdeDpmSolver && solver_order >= 3 {
            return Err(SchedulerError::Unsupported(format!(
                "{CLASS}: sde-dpmsolver has no third-order update"
            )));
        }
        let schedule = training_schedule(config, true)?;
        let (timesteps, mut sigmas) = plan(config, &schedule, steps)?;
        sigmas.push(dpm_final_sigma(config, &schedule));
        Ok(Self {
            timesteps,
            sigmas: sigmas.into_iter().map(|s| f64::from(s as f32)).collect(),
            algorithm,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            guard: X0Guard::from_config(config, None),
            solver_order,
            heun: uses_heun(config),
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            final_zero: config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero)
                == FinalSigmasType::Zero,
            history: History::new(solver_order),
        })
    }
}

/// Timesteps and N sigmas of `set_timesteps`: spaced timesteps at the table's sigmas, or a
/// Karras / Lu-lambda / exponential / beta conversion over the full noise range.
fn plan(
    config: &SchedulerConfig,
    schedule: &TrainingSchedule,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>), SchedulerError> {
    let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
    let timesteps = solver_timesteps(
        spacing,
        schedule.len(),
        steps,
        config.steps_offset.unwrap_or(0),
    )?;
    // Karras and Lu timesteps are rounded except for the cosine schedule.
    let round = config.beta_schedule != Some(BetaSchedule::SquaredcosCapV2);
    let conversion = SigmaConversion::from_config(config)?;
    // diffusers checks use_karras_sigmas, then use_lu_lambdas, then the other conversions.
    if conversion != SigmaConversion::Karras && config.use_lu_lambdas.unwrap_or(false) {
        return Ok(lu_plan(schedule, steps, round));
    }
    Ok(solver_plan(conversion, schedule, timesteps, round))
}

/// diffusers `_convert_to_lu`: evenly spaced in the float32 log sigma of the table's ends
/// (diffusers feeds it log sigmas, not lambdas), timesteps from `_sigma_to_t`.
fn lu_plan(schedule: &TrainingSchedule, steps: usize, round: bool) -> (Vec<f64>, Vec<f64>) {
    let log32 = |sigma: f64| f64::from(sigma.ln() as f32);
    let sigmas: Vec<f64> = linspace(
        log32(schedule.sigma_max()),
        log32(schedule.sigma_min()),
        steps,
    )
    .into_iter()
    .map(f64::exp)
    .collect();
    let timesteps = sigmas
        .iter()
        .map(|&sigma| {
            let t = schedule.sigma_to_t(sigma);
            if round { round_half_even(t) } else { t.trunc() }
        })
        .collect();
    (timesteps, sigmas)
}

impl Stepper for DpmSolverMultistep {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError> {
        at(&self.timesteps, index)?;
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let n = self.timesteps.len();
        at(&self.timesteps, index)?;
        let (sigma_s0, sigma_t) = (self.sigmas[index], self.sigmas[index + 1]);
        self.history.continue_at(index);
        let few_steps = self.lower_order_final && n < 15;
        let lower_order_final =
            index == n - 1 && (self.euler_at_final || few_steps || self.final_zero);
        let lower_order_second = index + 2 == n && few_steps;
        let converted = convert_model_output(
            self.algorithm,
            self.prediction,
            self.guard,
            model_output,
            sample,
            sigma_s0,
        );
        self.history.push(converted);
        let fresh = is_sde(self.algorithm).then(|| noise.randn(model_output.shape()));
        let done = self.history.lower_order_nums;
        let order = if self.solver_order == 1 || done < 1 || lower_order_final {
            1
        } else if self.solver_order == 2 || done < 2 || lower_order_second {
            2
        } else {
            3
        };
        let c = update_coefficients(self.algorithm, sigma_s0, sigma_t);
        let m0 = kept(&self.history, 0)?;
        let mut next = match order {
            1 => combine(&[(c.sample, sample), (c.d0, m0)]),
            2 => {
                let m1 = kept(&self.history, 1)?;
                let h0 = lambda(sigma_s0) - lambda(self.sigmas[index - 1]);
                let d1 = (m0 - m1) * ((1.0 / (h0 / c.h)) as f32);
                let d1_coefficient = if self.heun { c.d1 } else { 0.5 * c.d0 };
                combine(&[(c.sample, sample), (c.d0, m0), (d1_coefficient, &d1)])
            }
            _ => {
                let (m1, m2) = (kept(&self.history, 1)?, kept(&self.history, 2)?);
                let lambda_s1 = lambda(self.sigmas[index - 1]);
                let r0 = (lambda(sigma_s0) - lambda_s1) / c.h;
                let r1 = (lambda_s1 - lambda(self.sigmas[index - 2])) / c.h;
                let d1_0 = (m0 - m1) * ((1.0 / r0) as f32);
                let d1_1 = (m1 - m2) * ((1.0 / r1) as f32);
                let spread = &d1_0 - &d1_1;
                let d1 = &d1_0 + &(&spread * ((r0 / (r0 + r1)) as f32));
                let d2 = spread * ((1.0 / (r0 + r1)) as f32);
                combine(&[(c.sample, sample), (c.d0, m0), (c.d1, &d1), (c.d2, &d2)])
            }
        };
        if let Some(fresh) = fresh {
            next = combine(&[(1.0, &next), (c.noise, &fresh)]);
        }
        self.history.finish(index, self.solver_order);
        Ok(next)
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        let (alpha_t, sigma_t) = alpha_sigma(at(&self.sigmas, index)?);
        Ok(combine(&[(alpha_t, original), (sigma_t, noise)]))
    }
}
