//! Linear multistep (Adams-Bashforth in sigma with variable steps): k-diffusion `sample_lms`.
//!
//! k-diffusion integrates each Lagrange basis polynomial over the step with
//! `scipy.integrate.quad`. The integrand is a polynomial of degree `order - 1`, which QUADPACK's
//! 21-point Gauss-Kronrod rule integrates exactly on its first pass; an n-point Gauss-Legendre
//! rule is exact up to degree 2n - 1, so [`gauss_legendre`] with `n >= order / 2` gives the same
//! coefficients to rounding (~1e-15 relative).

use std::collections::VecDeque;

use super::{Method, Point, map2, weighted_sum};
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

/// k-diffusion `sample_lms` with `order` past derivatives.
#[derive(Debug, Clone)]
pub struct Lms {
    order: usize,
    derivatives: VecDeque<Sample>,
}

impl Lms {
    /// LMS of the given order (k-diffusion's default is 4).
    pub fn new(order: u32) -> Result<Self, SchedulerError> {
        if order == 0 {
            return Err(SchedulerError::Config(
                "lms: order must be at least 1".into(),
            ));
        }
        Ok(Self {
            order: order as usize,
            derivatives: VecDeque::new(),
        })
    }
}

impl Method for Lms {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (step, sigma) = (point.eval.step, point.sigma());
        self.derivatives
            .push_back(map2(x, denoised, |x, den| (x - den) / sigma));
        if self.derivatives.len() > self.order {
            self.derivatives.pop_front();
        }
        let current_order = (step + 1).min(self.order);
        let mut terms = vec![(1.0, x)];
        // Coefficient j goes with the derivative j steps back (newest first).
        for (j, d) in self
            .derivatives
            .iter()
            .rev()
            .enumerate()
            .take(current_order)
        {
            terms.push((
                multistep_coefficient(current_order, point.sigmas, step, j),
                d,
            ));
        }
        Ok(weighted_sum(&terms))
    }

    fn reset(&mut self) {
        self.derivatives.clear();
    }
}

/// k-diffusion `linear_multistep_coeff(order, t, i, j)`: the integral over `[t[i], t[i + 1]]`
/// of the Lagrange basis polynomial through `t[i], t[i - 1], ..., t[i - order + 1]` that is 1
/// at `t[i - j]`.
pub fn multistep_coefficient(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    let basis = |tau: f64| {
        (0..order)
            .filter(|&k| k != j)
            .map(|k| (tau - t[i - k]) / (t[i - j] - t[i - k]))
            .product::<f64>()
    };
    let points = order.div_ceil(2).max(1);
    integrate(basis, t[i], t[i + 1], &gauss_legendre(points))
}

/// `integral_a^b f` with a Gauss-Legendre rule given as `(node, weight)` on `[-1, 1]`.
pub fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, rule: &[(f64, f64)]) -> f64 {
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * rule
        .iter()
        .map(|&(node, weight)| weight * f(mid + half * node))
        .sum::<f64>()
}

/// The n-point Gauss-Legendre rule on `[-1, 1]` (nodes by Newton's method on P_n, as in
/// Numerical Recipes `gauleg`); exact for polynomials up to degree 2n - 1.
pub fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut rule = Vec::with_capacity(n);
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut derivative = 0.0;
        for _ in 0..100 {
            // P_n(z) by the three-term recurrence, and P_n'(z) from P_n and P_{n-1}.
            let (mut p1, mut p2) = (1.0, 0.0);
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                p1 = ((2 * j + 1) as f64 * z * p2 - j as f64 * p3) / (j + 1) as f64;
            }
            derivative = n as f64 * (z * p1 - p2) / (z * z - 1.0);
            let previous = z;
            z = previous - p1 / derivative;
            if (z - previous).abs() <= 1e-15 {
                break;
            }
        }
        let weight = 2.0 / ((1.0 - z * z) * derivative * derivative);
        rule.push((-z, weight));
        if 2 * i + 1 != n {
            rule.push((z, weight));
        }
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        for n in 1..8 {
            let rule = gauss_legendre(n);
            assert_eq!(rule.len(), n);
            let total: f64 = rule.iter().map(|(_, w)| w).sum();
            assert!((total - 2.0).abs() < 1e-14);
            let degree = 2 * n as i32 - 1;
            let exact = (3f64.powi(degree + 1) - 1.0) / f64::from(degree + 1);
            let got = integrate(|t| t.powi(degree), 1.0, 3.0, &rule);
            assert!((got - exact).abs() <= 1e-12 * exact, "n = {n}");
        }
    }

    #[test]
    fn first_order_coefficient_is_the_step() {
        let t = [14.6, 10.0, 5.0, 0.0];
        assert!((multistep_coefficient(1, &t, 0, 0) + 4.6).abs() < 1e-12);
        // Order 2: trapezoid-like Adams-Bashforth weights summing to the step.
        let sum: f64 = (0..2).map(|j| multistep_coefficient(2, &t, 1, j)).sum();
        assert!((sum + 5.0).abs() < 1e-12);
    }
}
