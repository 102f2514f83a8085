//! diffusers `UniPCMultistepScheduler`: the unified predictor-corrector of Zhao et al. 2023
//! (arXiv:2302.04867), B(h) variants bh1 and bh2, data or noise prediction.

use super::config::{
    AlgorithmType, FinalSigmasType, PredictionType, SchedulerConfig, SolverType, TimestepSpacing,
};
use super::dpmsolver_multistep::convert_model_output;
use super::noise::NoiseSource;
use super::spacing::SigmaConversion;
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::vp::{
    History, X0Guard, alpha_sigma, combine, kept, lambda, reject_unmodelled, solver_plan,
    solver_timesteps, training_schedule,
};

const CLASS: &str = "UniPCMultistepScheduler";

/// `UniPCMultistepScheduler` configured for a number of steps.
#[derive(Debug, Clone)]
pub struct UniPcMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    prediction: PredictionType,
    guard: X0Guard,
    predict_x0: bool,
    bh2: bool,
    solver_order: usize,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    history: History,
    /// The sample the last predictor started from (diffusers `last_sample`).
    last_sample: Option<Sample>,
    /// The order of the last predictor (diffusers `this_order`).
    last_order: usize,
}

impl UniPcMultistep {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        reject_unmodelled(
            config,
            CLASS,
            &[
                "use_flow_sigmas",
                "use_dynamic_shifting",
                "sigma_min",
                "sigma_max",
                "shift_terminal",
                "solver_p",
            ],
        )?;
        let solver_order = config.solver_order.unwrap_or(2) as usize;
        if solver_order == 0 {
            return Err(SchedulerError::Config(format!(
                "{CLASS}: solver_order must be at least 1"
            )));
        }
        let schedule = training_schedule(config, true)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let spaced = solver_timesteps(
            spacing,
            schedule.len(),
            steps,
            config.steps_offset.unwrap_or(0),
        )?;
        let final_zero =
            config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero) == FinalSigmasType::Zero;
        let predict_x0 = config.predict_x0.unwrap_or(true);
        // diffusers maps midpoint / heun / logrho to bh2.
        let bh2 = config.solver_type != Some(SolverType::Bh1);
        if final_zero && !(predict_x0 && bh2) {
            // B(h) = h, or the noise-prediction update, is infinite at sigma 0: diffusers returns
            // NaN latents from the last step.
            return Err(SchedulerError::Unsupported(format!(
                "{CLASS} with solver_type bh1 or predict_x0 = false needs final_sigmas_type = \"sigma_min\" (diffusers yields NaN at a final sigma of 0)"
            )));
        }
        let conversion = SigmaConversion::from_config(config)?;
        let (timesteps, mut sigmas) = solver_plan(conversion, &schedule, spaced, true);
        // After a conversion, "sigma_min" means the last converted sigma.
        let sigma_min = match conversion {
            SigmaConversion::Interpolated => schedule.sigma_min(),
            _ => sigmas[sigmas.len() - 1],
        };
        sigmas.push(if final_zero { 0.0 } else { sigma_min });
        Ok(Self {
            timesteps,
            sigmas: sigmas.into_iter().map(|s| f64::from(s as f32)).collect(),
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            guard: X0Guard::from_config(config, None),
            predict_x0,
            bh2,
            solver_order,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            disable_corrector: config
                .disable_corrector
                .iter()
                .flatten()
                .map(|&i| i as usize)
                .collect(),
            history: History::new(solver_order),
            last_sample: None,
            last_order: 1,
        })
    }

    /// diffusers `convert_model_output`: x0 (guarded) or epsilon.
    fn convert(&self, model_output: &Sample, sample: &Sample, sigma: f64) -> Sample {
        let algorithm = if self.predict_x0 {
            AlgorithmType::DpmSolverPlusPlus
        } else {
            AlgorithmType::DpmSolver
        };
        // The noise-prediction branch of UniPC never thresholds.
        let guard = if self.predict_x0 {
            self.guard
        } else {
            X0Guard::None
        };
        convert_model_output(
            algorithm,
            self.prediction,
            guard,
            model_output,
            sample,
            sigma,
        )
    }

    /// One UniPC update of `x` (at `sigmas[from]`) to `sigmas[to]` of the given order, over the
    /// kept outputs `m0 = back(0)` (at `from`) and `back(i)` (at `sigmas[from - i]`): the
    /// predictor (`multistep_uni_p_bh_update`, `model_t = None`) or the corrector
    /// (`multistep_uni_c_bh_update`, with the new output `model_t` at `to`).
    fn update(
        &self,
        x: &Sample,
        from: usize,
        to: usize,
        order: usize,
        model_t: Option<&Sample>,
    ) -> Result<Sample, SchedulerError> {
        let (sigma_s0, sigma_t) = (self.sigmas[from], self.sigmas[to]);
        let (alpha_t, sigma_t_vp) = alpha_sigma(sigma_t);
        let (alpha_s0, sigma_s0_vp) = alpha_sigma(sigma_s0);
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let m0 = kept(&self.history, 0)?;
        let mut rks = Vec::with_capacity(order);
        let mut differences = Vec::with_capacity(order);
        for i in 1..order {
            let earlier = from.checked_sub(i).ok_or(SchedulerError::IndexOutOfRange {
                index: from,
                len: self.timesteps.len(),
            })?;
            let rk = (lambda(self.sigmas[earlier]) - lambda_s0) / h;
            differences.push((kept(&self.history, i)? - m0) / rk as f32);
            rks.push(rk);
        }
        rks.push(1.0);
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let b_h = if self.bh2 { hh.exp_m1() } else { hh };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let (mut r, mut b) = (Vec::with_capacity(order), Vec::with_capacity(order));
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|rk| rk.powi(i as i32 - 1))
                    .collect::<Vec<f64>>(),
            );
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let (x_coefficient, m0_coefficient, scale) = if self.predict_x0 {
            (sigma_t_vp / sigma_s0_vp, -(alpha_t * h_phi_1), alpha_t)
        } else {
            (alpha_t / alpha_s0, -(sigma_t_vp * h_phi_1), sigma_t_vp)
        };
        let base = combine(&[(x_coefficient, x), (m0_coefficient, m0)]);
        let mut terms: Vec<(f64, &Sample)> = Vec::new();
        let d1_t;
        let rhos = match model_t {
            None if differences.is_empty() => Vec::new(),
            None if order == 2 => vec![0.5],
            None => solve(&r[..order - 1], &b[..order - 1]),
            Some(_) if order == 1 => vec![0.5],
            Some(_) => solve(&r, &b),
        };
        for (rho, difference) in rhos.iter().zip(&differences) {
            terms.push((*rho, difference));
        }
        if let Some(model_t) = model_t {
            d1_t = model_t - m0;
            terms.push((rhos.last().copied().unwrap_or(0.5), &d1_t));
        }
        if terms.is_empty() {
            return Ok(base);
        }
        let residual = combine(&terms);
        Ok(combine(&[(1.0, &base), (-(scale * b_h), &residual)]))
    }
}

/// Solves the small dense system `rows * x = rhs` (Gaussian elimination with partial pivoting;
/// `torch.linalg.solve` in diffusers). Rows are truncated to the system's size.
fn solve(rows: &[Vec<f64>], rhs: &[f64]) -> Vec<f64> {
    let n = rhs.len();
    let mut a: Vec<Vec<f64>> = rows
        .iter()
        .zip(rhs)
        .map(|(row, &v)| row[..n].iter().copied().chain([v]).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (target, source) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *target -= factor * source;
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (a[row][n] - tail) / a[row][row];
    }
    x
}

impl Stepper for UniPcMultistep {
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
        if self.history.continue_at(index) {
            self.last_sample = None;
        }
        let converted = self.convert(model_output, sample, self.sigmas[index]);
        let corrected = match &self.last_sample {
            Some(last) if index > 0 && !self.disable_corrector.contains(&(index - 1)) => {
                Some(self.update(last, index - 1, index, self.last_order, Some(&converted))?)
            }
            _ => None,
        };
        let sample = corrected.as_ref().unwrap_or(sample);
        self.history.push(converted);
        let order = if self.lower_order_final {
            self.solver_order.min(n - index)
        } else {
            self.solver_order
        };
        self.last_order = order.min(self.history.lower_order_nums + 1);
        let next = self.update(sample, index, index + 1, self.last_order, None)?;
        self.last_sample = Some(sample.clone());
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
