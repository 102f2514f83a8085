//! diffusers `PNDMScheduler` with `skip_prk_steps = true` (the SDXL config): pseudo linear
//! multistep (PLMS, Liu et al. 2022, arXiv:2202.09778) started by a Heun-like step that
//! evaluates the first timestep twice, which is why the plan repeats its second timestep.
//!
//! PNDM has no sigma list of its own; [`Stepper::sigmas`] reports
//! `sqrt((1 - acp) / acp)` at each step's timestep plus a final 0 ([`super::vp::sigmas_at_timesteps`]);
//! the warm-up evaluation that repeats a timestep does not add a step.

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::noise::NoiseSource;
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::vp::{
    add_noise_at_timestep, alpha_cumprod_at, combine, integer_timesteps, sigmas_at_timesteps,
    training_schedule,
};

/// `PNDMScheduler` (PLMS steps only) configured for a number of steps.
#[derive(Debug, Clone)]
pub struct Pndm {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    v_prediction: bool,
    /// `num_train_timesteps // steps`.
    stride: f64,
    /// Steps taken since the start (diffusers `counter`).
    counter: usize,
    /// Past model outputs, oldest first (diffusers `ets`).
    ets: Vec<Sample>,
    /// The sample of the first step, which the second step restarts from.
    cur_sample: Option<Sample>,
    next_index: Option<usize>,
}

impl Pndm {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        if !config.skip_prk_steps.unwrap_or(false) {
            return Err(SchedulerError::Unsupported(
                "PNDMScheduler with skip_prk_steps = false (Runge-Kutta warm-up steps)".into(),
            ));
        }
        let v_prediction = match config.prediction_type.unwrap_or(PredictionType::Epsilon) {
            PredictionType::Epsilon => false,
            PredictionType::VPrediction => true,
            PredictionType::Sample => {
                return Err(SchedulerError::Config(
                    "PNDMScheduler: prediction_type must be epsilon or v_prediction".into(),
                ));
            }
        };
        // The class has no rescale_betas_zero_snr.
        let schedule = training_schedule(config, false)?;
        let alphas_cumprod = schedule.alphas_cumprod.clone();
        let mut ascending = integer_timesteps(
            config.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            schedule.len(),
            steps,
            config.steps_offset.unwrap_or(0),
        )?;
        ascending.reverse();
        // concat(ts[:-1], ts[-2:-1], ts[-1:]) reversed: the second-largest timestep twice.
        let n = ascending.len();
        let mut timesteps: Vec<f64> = ascending[..n - 1]
            .iter()
            .chain(&ascending[n.saturating_sub(2)..n - 1])
            .chain(&ascending[n - 1..])
            .copied()
            .collect();
        timesteps.reverse();
        // One sigma per step (the repeated warm-up timestep is one step) plus the final 0.
        let step_timesteps: Vec<f64> = ascending.iter().rev().copied().collect();
        Ok(Self {
            sigmas: sigmas_at_timesteps(&schedule, &step_timesteps)?,
            timesteps,
            final_alpha_cumprod: if config.set_alpha_to_one.unwrap_or(false) {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            v_prediction,
            stride: (schedule.len() / steps) as f64,
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            next_index: None,
        })
    }

    /// diffusers `_get_prev_sample`: formula (9) of the PNDM paper from `t` to `prev_t`.
    fn prev_sample(
        &self,
        sample: &Sample,
        t: f64,
        prev_t: f64,
        model_output: &Sample,
    ) -> Result<Sample, SchedulerError> {
        let acp = alpha_cumprod_at(&self.alphas_cumprod, t)?;
        let acp_prev = if prev_t >= 0.0 {
            alpha_cumprod_at(&self.alphas_cumprod, prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let (beta, beta_prev) = (1.0 - acp, 1.0 - acp_prev);
        let epsilon = if self.v_prediction {
            combine(&[
                (f64::from(acp.sqrt()), model_output),
                (f64::from(beta.sqrt()), sample),
            ])
        } else {
            model_output.clone()
        };
        let sample_coefficient = (acp_prev / acp).sqrt();
        let denominator = acp * beta_prev.sqrt() + (acp * beta * acp_prev).sqrt();
        let difference = acp_prev - acp;
        let mut out = sample * sample_coefficient;
        ndarray::Zip::from(&mut out)
            .and(&epsilon)
            .for_each(|o, &e| *o -= difference * e / denominator);
        Ok(out)
    }
}

impl Stepper for Pndm {
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
        let mut t = at(&self.timesteps, index)?;
        if self.next_index != Some(index) {
            self.counter = 0;
            self.ets.clear();
            self.cur_sample = None;
        }
        // diffusers `step_plms`.
        let mut prev_t = t - self.stride;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.clone());
        } else {
            prev_t = t;
            t += self.stride;
        }
        let kept = self.ets.len();
        let (output, start) = if kept == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            (model_output.clone(), sample.clone())
        } else if kept == 1 && self.counter == 1 {
            let first = self.cur_sample.take().unwrap_or_else(|| sample.clone());
            ((model_output + &self.ets[0]) / 2.0, first)
        } else {
            let e = |back: usize| &self.ets[kept - 1 - back];
            let output = match kept {
                2 => combine(&[(3.0, e(0)), (-1.0, e(1))]) / 2.0,
                3 => combine(&[(23.0, e(0)), (-16.0, e(1)), (5.0, e(2))]) / 12.0,
                4.. => {
                    combine(&[(55.0, e(0)), (-59.0, e(1)), (37.0, e(2)), (-9.0, e(3))])
                        * (1.0f32 / 24.0)
                }
                _ => model_output.clone(),
            };
            (output, sample.clone())
        };
        let next = self.prev_sample(&start, t, prev_t, &output)?;
        self.counter += 1;
        self.next_index = Some(index + 1);
        Ok(next)
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        add_noise_at_timestep(
            &self.alphas_cumprod,
            at(&self.timesteps, index)?,
            original,
            noise,
        )
    }
}
