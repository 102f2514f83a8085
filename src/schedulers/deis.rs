//! diffusers `DEISMultistepScheduler`: the diffusion exponential integrator sampler of Zhang &
//! Chen 2022 (arXiv:2204.13902), log-rho multistep, orders 1 to 3.

use super::config::{AlgorithmType, PredictionType, SchedulerConfig, TimestepSpacing};
use super::noise::NoiseSource;
use super::spacing::SigmaConversion;
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::vp::{
    History, X0Guard, alpha_sigma, combine, data_prediction, kept, lambda, noise_prediction,
    reject_unmodelled, solver_plan, solver_timesteps, training_schedule,
};

const CLASS: &str = "DEISMultistepScheduler";

/// `DEISMultistepScheduler` configured for a number of steps.
#[derive(Debug, Clone)]
pub struct DeisMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    prediction: PredictionType,
    guard: X0Guard,
    solver_order: usize,
    lower_order_final: bool,
    history: History,
}

impl DeisMultistep {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        reject_unmodelled(config, CLASS, &["use_flow_sigmas", "use_dynamic_shifting"])?;
        // diffusers maps dpmsolver / dpmsolver++ to deis and rejects the SDE types; every
        // solver_type is mapped to logrho.
        if let Some(
            algorithm @ (AlgorithmType::SdeDpmSolver | AlgorithmType::SdeDpmSolverPlusPlus),
        ) = config.algorithm_type
        {
            return Err(SchedulerError::Config(format!(
                "{CLASS} does not implement algorithm_type {algorithm:?}"
            )));
        }
        let solver_order = config.solver_order.unwrap_or(2) as usize;
        if solver_order == 0 {
            return Err(SchedulerError::Config(format!(
                "{CLASS}: solver_order must be at least 1"
            )));
        }
        // The class has no rescale_betas_zero_snr.
        let schedule = training_schedule(config, false)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let spaced = solver_timesteps(
            spacing,
            schedule.len(),
            steps,
            config.steps_offset.unwrap_or(0),
        )?;
        // DEIS always ends at a non-zero sigma: the table's smallest, or the last converted one.
        let conversion = SigmaConversion::from_config(config)?;
        let (timesteps, mut sigmas) = solver_plan(conversion, &schedule, spaced, true);
        sigmas.push(match conversion {
            SigmaConversion::Interpolated => schedule.sigma_min(),
            _ => sigmas[sigmas.len() - 1],
        });
        Ok(Self {
            timesteps,
            sigmas: sigmas.into_iter().map(|s| f64::from(s as f32)).collect(),
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            guard: X0Guard::from_config(config, None),
            solver_order,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            history: History::new(solver_order),
        })
    }
}

// The basis integrals are evaluated in float32 in diffusers' order of operations: diffusers
// computes them on float32 tensors, and their differences cancel heavily when neighbouring
// sigmas are close, so a float64 evaluation would drift from it by up to ~3e-5.

/// DEIS's log-rho integral of the second-order Lagrange basis (`ind_fn` of
/// `multistep_deis_second_order_update`).
fn basis2(t: f32, b: f32, c: f32) -> f32 {
    t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln())
}

/// The third-order basis integral (`ind_fn` of `multistep_deis_third_order_update`).
fn basis3(t: f32, b: f32, c: f32, d: f32) -> f32 {
    let (lt, lc, ld, lb) = (t.ln(), c.ln(), d.ln(), b.ln());
    let numerator = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
    numerator / ((lb - lc) * (lb - ld))
}

impl Stepper for DeisMultistep {
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let n = self.timesteps.len();
        at(&self.timesteps, index)?;
        self.history.continue_at(index);
        let few_steps = self.lower_order_final && n < 15;
        let lower_order_final = index + 1 == n && few_steps;
        let lower_order_second = index + 2 == n && few_steps;
        let (sigma_s0, sigma_t) = (self.sigmas[index], self.sigmas[index + 1]);
        // diffusers `convert_model_output`: x0 (guarded), then back to epsilon.
        let (alpha_s0, sigma_s0_vp) = alpha_sigma(sigma_s0);
        let x0 = data_prediction(self.prediction, model_output, sample, alpha_s0, sigma_s0_vp);
        let x0 = self.guard.apply(x0);
        let epsilon = noise_prediction(PredictionType::Sample, &x0, sample, alpha_s0, sigma_s0_vp);
        self.history.push(epsilon);
        let done = self.history.lower_order_nums;
        let order = if self.solver_order == 1 || done < 1 || lower_order_final {
            1
        } else if self.solver_order == 2 || done < 2 || lower_order_second {
            2
        } else {
            3
        };
        let (alpha_t, sigma_t_vp) = alpha_sigma(sigma_t);
        let rho = |sigma: f64| {
            let (alpha, sigma_vp) = alpha_sigma(sigma);
            sigma_vp as f32 / alpha as f32
        };
        let (rho_t, rho_s0) = (rho(sigma_t), rho(sigma_s0));
        let m0 = kept(&self.history, 0)?;
        let next = match order {
            1 => {
                let h = lambda(sigma_t) - lambda(sigma_s0);
                combine(&[
                    (alpha_t / alpha_s0, sample),
                    (-(sigma_t_vp * h.exp_m1()), m0),
                ])
            }
            2 => {
                let m1 = kept(&self.history, 1)?;
                let rho_s1 = rho(self.sigmas[index - 1]);
                let coef1 =
                    f64::from(basis2(rho_t, rho_s0, rho_s1) - basis2(rho_s0, rho_s0, rho_s1));
                let coef2 =
                    f64::from(basis2(rho_t, rho_s1, rho_s0) - basis2(rho_s0, rho_s1, rho_s0));
                combine(&[(1.0 / alpha_s0, sample), (coef1, m0), (coef2, m1)]) * alpha_t as f32
            }
            _ => {
                let (m1, m2) = (kept(&self.history, 1)?, kept(&self.history, 2)?);
                let (rho_s1, rho_s2) = (rho(self.sigmas[index - 1]), rho(self.sigmas[index - 2]));
                let coef = |b: f32, c: f32, d: f32| {
                    f64::from(basis3(rho_t, b, c, d) - basis3(rho_s0, b, c, d))
                };
                let coef1 = coef(rho_s0, rho_s1, rho_s2);
                let coef2 = coef(rho_s1, rho_s2, rho_s0);
                let coef3 = coef(rho_s2, rho_s0, rho_s1);
                combine(&[
                    (1.0 / alpha_s0, sample),
                    (coef1, m0),
                    (coef2, m1),
                    (coef3, m2),
                ]) * alpha_t as f32
            }
        };
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
