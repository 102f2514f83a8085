//! UniPC, the unified predictor-corrector (Zhao et al. 2023), as ComfyUI runs it on a sigma
//! list: `sample_unipc` (`comfy/extra_samplers/uni_pc.py`), multistep, data prediction,
//! `lower_order_final`, variant `bh1` (or `bh2`).
//!
//! ComfyUI solves in the variance-preserving frame `x / sqrt(1 + sigma^2)` with "time" = sigma
//! (`SigmaConvert`: alpha = 1 / sqrt(1 + sigma^2), lambda = -ln sigma), order
//! `min(3, steps - 1)`, and a final sigma of 0.001 instead of 0 (the result is left at that
//! level). Each update to sigma_k predicts a sample, the model is evaluated there (that is
//! evaluation k), and the same evaluation corrects the sample and feeds the next prediction.
//! So evaluation k returns the *predicted* sample for evaluation k + 1, in the k-diffusion frame.

use std::collections::VecDeque;

use super::{Evaluation, Method, Point, weighted_sum};
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

/// The final sigma ComfyUI substitutes for 0.
const FINAL_SIGMA: f64 = 0.001;

/// UniPC's `B(h)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniPcVariant {
    /// `B(h) = h` (ComfyUI `uni_pc`).
    Bh1,
    /// `B(h) = e^h - 1` (ComfyUI `uni_pc_bh2`).
    Bh2,
}

/// ComfyUI `sample_unipc`.
#[derive(Debug, Clone)]
pub struct UniPc {
    variant: UniPcVariant,
    max_order: usize,
    /// Denoised predictions at the last `order` sigmas (oldest first), and those sigmas.
    models: VecDeque<Sample>,
    times: VecDeque<f64>,
    /// The corrected sample (VP frame) at the newest sigma of `times`.
    base: Option<Sample>,
    /// The order of the update whose prediction the model is evaluating.
    pending_order: usize,
}

impl UniPc {
    /// UniPC of at most `max_order` (ComfyUI uses 3), variant `variant`.
    pub fn new(max_order: u32, variant: UniPcVariant) -> Result<Self, SchedulerError> {
        if max_order == 0 {
            return Err(SchedulerError::Config(
                "uni_pc: order must be at least 1".into(),
            ));
        }
        Ok(Self {
            variant,
            max_order: max_order as usize,
            models: VecDeque::new(),
            times: VecDeque::new(),
            base: None,
            pending_order: 0,
        })
    }

    /// The noise level the last update goes to.
    fn target(sigmas: &[f64], index: usize) -> f64 {
        let sigma = sigmas[index];
        if index == sigmas.len() - 1 && sigma < FINAL_SIGMA {
            FINAL_SIGMA
        } else {
            sigma
        }
    }

    /// `multistep_uni_pc_bh_update` from the newest stored sigma to `sigma_t` with `order`:
    /// the predictor when `model_t` is `None`, else the corrector with the model's prediction
    /// at the predicted point.
    fn update(
        &self,
        base: &Sample,
        sigma_t: f64,
        order: usize,
        model_t: Option<&Sample>,
    ) -> Sample {
        let n = self.times.len();
        let (sigma_prev_0, model_prev_0) = (self.times[n - 1], &self.models[n - 1]);
        let lambda = |sigma: f64| -sigma.ln();
        let vp_std = |sigma: f64| sigma / (1.0 + sigma * sigma).sqrt();
        let alpha_t = 1.0 / (1.0 + sigma_t * sigma_t).sqrt();
        let h = lambda(sigma_t) - lambda(sigma_prev_0);
        // rks for the older points (1.. order), then 1 for the new point.
        let mut rks: Vec<f64> = (1..order)
            .map(|i| (lambda(self.times[n - 1 - i]) - lambda(sigma_prev_0)) / h)
            .collect();
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.variant {
            UniPcVariant::Bh1 => hh,
            UniPcVariant::Bh2 => hh.exp_m1(),
        };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut rows = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            rows.push(rks.iter().map(|r| r.powi(i as i32 - 1)).collect::<Vec<_>>());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let rhos = match model_t {
            None if order == 2 => vec![0.5],
            None => solve(&leading_block(&rows, order - 1), &b[..order - 1]),
            Some(_) if order == 1 => vec![0.5],
            Some(_) => solve(&rows, &b),
        };
        // x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0, then
        // - alpha_t * B(h) * (sum_k rho_k (m_k - m_0) / r_k [+ rho_last (model_t - m_0)]).
        let scale = alpha_t * b_h;
        let mut coeff_m0 = -alpha_t * h_phi_1;
        let mut terms: Vec<(f64, &Sample)> = Vec::with_capacity(order + 2);
        terms.push((vp_std(sigma_t) / vp_std(sigma_prev_0), base));
        for (k, rho) in rhos.iter().enumerate().take(order - 1) {
            let weight = scale * rho / rks[k];
            terms.push((-weight, &self.models[n - 2 - k]));
            coeff_m0 += weight;
        }
        if let Some(model_t) = model_t {
            let rho = rhos[rhos.len() - 1];
            terms.push((-scale * rho, model_t));
            coeff_m0 += scale * rho;
        }
        terms.push((coeff_m0, model_prev_0));
        weighted_sum(&terms)
    }

    fn effective_order(&self, sigmas: &[f64]) -> usize {
        self.max_order.min(sigmas.len() - 2)
    }

    fn remember(&mut self, order: usize, sigma: f64, model: &Sample) {
        if self.models.len() == order {
            self.models.pop_front();
            self.times.pop_front();
        }
        self.models.push_back(model.clone());
        self.times.push_back(sigma);
    }
}

fn leading_block(rows: &[Vec<f64>], size: usize) -> Vec<Vec<f64>> {
    rows[..size]
        .iter()
        .map(|row| row[..size].to_vec())
        .collect()
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (`torch.linalg.solve` on the
/// at most 3 x 3 UniPC systems).
fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(row, &bi)| row.iter().copied().chain([bi]).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        let (upper, lower) = m.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for row in lower.iter_mut() {
            let factor = row[col] / pivot_row[col];
            for (value, pivot_value) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= factor * pivot_value;
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][n] - tail) / m[row][row];
    }
    x
}

impl Method for UniPc {
    /// One evaluation per sigma except the last; needs at least 2 steps.
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        if sigmas.len() < 3 {
            return Err(SchedulerError::Config(
                "uni_pc needs at least 2 steps".into(),
            ));
        }
        Ok((0..sigmas.len() - 1)
            .map(|step| Evaluation::first(step, sigmas))
            .collect())
    }

    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let sigmas = point.sigmas;
        let (k, sigma_k) = (point.eval.step, point.sigma());
        let order = self.effective_order(sigmas);
        let steps = sigmas.len() - 1;
        let corrected = if k == 0 {
            x / ((1.0 + sigma_k * sigma_k).sqrt() as f32)
        } else {
            let base = self.base.take().ok_or_else(|| {
                SchedulerError::Config(format!("uni_pc: evaluation {k} came before evaluation 0"))
            })?;
            self.update(&base, sigma_k, self.pending_order, Some(denoised))
        };
        self.remember(order, sigma_k, denoised);
        // The next update: warm-up orders 1, 2, ... then `order`, lowered near the end.
        let next = k + 1;
        let next_order = if next < order {
            next
        } else {
            order.min(steps + 1 - next)
        };
        let target = Self::target(sigmas, next);
        let predicted = self.update(&corrected, target, next_order, None);
        self.base = Some(corrected);
        self.pending_order = next_order;
        // Back to the k-diffusion frame of the next evaluation (or of the final sigma).
        Ok(predicted * ((1.0 + target * target).sqrt() as f32))
    }

    fn reset(&mut self) {
        self.models.clear();
        self.times.clear();
        self.base = None;
        self.pending_order = 0;
    }
}
