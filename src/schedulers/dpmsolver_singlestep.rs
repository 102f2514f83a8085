//! diffusers `DPMSolverSinglestepScheduler`: singlestep DPM-Solver / DPM-Solver++ (Lu et al.
//! 2022), which groups the steps into runs of 1, 2, 3, ... model evaluations and takes each
//! run's update from the sample at the start of the run.

use super::config::{
    AlgorithmType, FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing,
};
use super::dpmsolver_multistep::{
    check_dpm_config, convert_model_output, dpm_algorithm, dpm_final_sigma, is_sde,
    update_coefficients, uses_heun,
};
use super::noise::NoiseSource;
use super::spacing::SigmaConversion;
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::vp::{
    History, X0Guard, alpha_sigma, combine, kept, lambda, solver_plan, solver_timesteps,
    training_schedule,
};

const CLASS: &str = "DPMSolverSinglestepScheduler";

/// `DPMSolverSinglestepScheduler` configured for a number of steps.
#[derive(Debug, Clone)]
pub struct DpmSolverSinglestep {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    algorithm: AlgorithmType,
    prediction: PredictionType,
    guard: X0Guard,
    heun: bool,
    order_list: Vec<usize>,
    history: History,
    /// The sample at the start of the current run (diffusers `self.sample`).
    run_start: Option<Sample>,
}

impl DpmSolverSinglestep {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        check_dpm_config(config, CLASS)?;
        let algorithm = dpm_algorithm(config);
        let guard = X0Guard::from_config(config, None);
        match algorithm {
            AlgorithmType::SdeDpmSolver => {
                return Err(SchedulerError::Config(format!(
                    "{CLASS} does not implement algorithm_type sde-dpmsolver"
                )));
            }
            // diffusers reads `self.alpha_t[timestep]` with no timestep there and fails.
            AlgorithmType::DpmSolver if guard != X0Guard::None => {
                return Err(SchedulerError::Unsupported(format!(
                    "{CLASS}: thresholding with algorithm_type dpmsolver"
                )));
            }
            _ => {}
        }
        let solver_order = config.solver_order.unwrap_or(2) as usize;
        if !(1..=3).contains(&solver_order) {
            return Err(SchedulerError::Config(format!(
                "{CLASS}: solver_order = {solver_order}; must be 1, 2 or 3"
            )));
        }
        // The class has no rescale_betas_zero_snr.
        let schedule = training_schedule(config, false)?;
        // Always linspace spacing, whatever timestep_spacing says.
        let linspace = solver_timesteps(TimestepSpacing::Linspace, schedule.len(), steps, 0)?;
        let conversion = SigmaConversion::from_config(config)?;
        let (timesteps, mut sigmas) = solver_plan(conversion, &schedule, linspace, true);
        sigmas.push(dpm_final_sigma(config, &schedule));
        let final_zero =
            config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero) == FinalSigmasType::Zero;
        // diffusers forces lower_order_final for uneven step counts and for a zero final sigma.
        let lower_order_final = config.lower_order_final.unwrap_or(false)
            || !steps.is_multiple_of(solver_order)
            || final_zero;
        Ok(Self {
            timesteps,
            sigmas: sigmas.into_iter().map(|s| f64::from(s as f32)).collect(),
            algorithm,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            guard,
            heun: uses_heun(config),
            order_list: order_list(steps, solver_order, lower_order_final, final_zero),
            history: History::new(solver_order),
            run_start: None,
        })
    }
}

/// diffusers `get_order_list`: the solver order of every step.
fn order_list(steps: usize, order: usize, lower_order_final: bool, final_zero: bool) -> Vec<usize> {
    let cycle = |n: usize| (1..=order).cycle().take(n * order);
    let mut orders: Vec<usize> = if lower_order_final {
        match (order, steps % order) {
            (3, 0) => cycle(steps / 3 - 1).chain([1, 2, 1]).collect(),
            (3, 1) => cycle(steps / 3).chain([1]).collect(),
            (3, _) => cycle(steps / 3).chain([1, 2]).collect(),
            (2, 0) => cycle(steps / 2 - 1).chain([1, 1]).collect(),
            (2, _) => cycle(steps / 2).chain([1]).collect(),
            _ => vec![1; steps],
        }
    } else {
        cycle(steps / order).collect()
    };
    if final_zero && let Some(last) = orders.last_mut() {
        *last = 1;
    }
    orders
}

impl Stepper for DpmSolverSinglestep {
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
        at(&self.timesteps, index)?;
        if self.history.continue_at(index) {
            self.run_start = None;
        }
        let sigma_s0 = self.sigmas[index];
        let sigma_t = self.sigmas[index + 1];
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
        // The planned order, lowered while too few outputs are kept (img2img starts mid-run).
        let order = self
            .order_list
            .get(index)
            .copied()
            .unwrap_or(1)
            .min(self.history.len());
        if order == 1 {
            self.run_start = Some(sample.clone());
        }
        let start = self.run_start.as_ref().unwrap_or(sample);
        // The run started `order - 1` steps ago, at sigmas[index + 1 - order].
        let sigma_start = self.sigmas[index + 1 - order];
        let c = update_coefficients(self.algorithm, sigma_start, sigma_t);
        let m0 = kept(&self.history, 0)?;
        let mut next = match order {
            1 => combine(&[(c.sample, start), (c.d0, m0)]),
            2 => {
                let m1 = kept(&self.history, 1)?;
                let r0 = (lambda(sigma_s0) - lambda(sigma_start)) / c.h;
                let d1 = (m0 - m1) * ((1.0 / r0) as f32);
                let d1_coefficient = if self.heun { c.d1 } else { 0.5 * c.d0 };
                combine(&[(c.sample, start), (c.d0, m1), (d1_coefficient, &d1)])
            }
            _ => {
                let (m1, m2) = (kept(&self.history, 1)?, kept(&self.history, 2)?);
                let lambda_s2 = lambda(sigma_start);
                let r0 = (lambda(sigma_s0) - lambda_s2) / c.h;
                let r1 = (lambda(self.sigmas[index - 1]) - lambda_s2) / c.h;
                let d1_0 = (m1 - m2) * ((1.0 / r1) as f32);
                let d1_1 = (m0 - m2) * ((1.0 / r0) as f32);
                if self.heun {
                    let d1 = (&(&d1_0 * r0 as f32) - &(&d1_1 * r1 as f32)) / (r0 - r1) as f32;
                    let d2 = (&d1_1 - &d1_0) * 2.0 / (r0 - r1) as f32;
                    combine(&[(c.sample, start), (c.d0, m2), (c.d1, &d1), (c.d2, &d2)])
                } else {
                    combine(&[(c.sample, start), (c.d0, m2), (c.d1, &d1_1)])
                }
            }
        };
        if let Some(fresh) = fresh {
            next = combine(&[(1.0, &next), (c.noise, &fresh)]);
        }
        // lower_order_nums plays no part here; the order list decides.
        self.history.finish(index, 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_lists_match_diffusers() {
        assert_eq!(
            order_list(10, 2, true, true),
            vec![1, 2, 1, 2, 1, 2, 1, 2, 1, 1]
        );
        assert_eq!(order_list(7, 2, true, true), vec![1, 2, 1, 2, 1, 2, 1]);
        assert_eq!(
            order_list(9, 3, true, true),
            vec![1, 2, 3, 1, 2, 3, 1, 2, 1]
        );
        assert_eq!(order_list(8, 3, true, false), vec![1, 2, 3, 1, 2, 3, 1, 2]);
        assert_eq!(order_list(6, 2, false, false), vec![1, 2, 1, 2, 1, 2]);
    }
}
