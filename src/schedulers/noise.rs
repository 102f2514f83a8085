//! Noise sources: where ancestral and SDE samplers, img2img and the initial latents get their
//! Gaussian noise. Samplers never draw noise themselves; they take a `&mut dyn NoiseSource`, so
//! runs are reproducible and tests can replay the exact noise a reference implementation drew.

use std::collections::VecDeque;

use ndarray::{ArrayD, IxDyn};

/// A stream of standard-normal float32 tensors.
pub trait NoiseSource: Send {
    /// The next draw, with `shape`.
    fn randn(&mut self, shape: &[usize]) -> ArrayD<f32>;
}

/// Replays recorded tensors in order (tests, and `latents=`-style inputs).
#[derive(Debug, Default)]
pub struct ReplayNoise {
    queue: VecDeque<ArrayD<f32>>,
    /// How many draws were served.
    pub served: usize,
}

impl ReplayNoise {
    /// A source that returns `draws` in order.
    pub fn new(draws: impl IntoIterator<Item = ArrayD<f32>>) -> Self {
        Self {
            queue: draws.into_iter().collect(),
            served: 0,
        }
    }

    /// Draws not yet served.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl NoiseSource for ReplayNoise {
    /// Returns the next recorded tensor. A shape mismatch or an exhausted queue is a bug in the
    /// caller's bookkeeping, so it yields NaN-filled noise that fails every parity check loudly.
    fn randn(&mut self, shape: &[usize]) -> ArrayD<f32> {
        self.served += 1;
        match self.queue.pop_front() {
            Some(draw) if draw.shape() == shape => draw,
            _ => ArrayD::from_elem(IxDyn(shape), f32::NAN),
        }
    }
}
