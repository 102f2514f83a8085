//! The state a multistep solver carries between steps: its recent converted model outputs.

use super::super::stepper::{Sample, SchedulerError};

/// The model outputs a multistep solver keeps, and where in the plan it is.
///
/// diffusers keeps this state in the scheduler object and expects a fresh `set_timesteps`
/// before each run; img2img starts at a `begin_index` with the state empty. Here the state
/// starts over whenever a step does not continue the previous one, which covers both.
#[derive(Debug, Clone, Default)]
pub struct History {
    outputs: Vec<Sample>,
    capacity: usize,
    next_index: Option<usize>,
    /// Steps taken since the start, capped at the solver order (diffusers `lower_order_nums`).
    pub lower_order_nums: usize,
}

impl History {
    /// Keeps at most `capacity` outputs (the solver order).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ..Default::default()
        }
    }

    /// Starts over unless `index` is the step after the previous one; true when it started over.
    pub fn continue_at(&mut self, index: usize) -> bool {
        if self.next_index == Some(index) {
            return false;
        }
        self.outputs.clear();
        self.lower_order_nums = 0;
        true
    }

    /// Appends the newest converted model output, dropping the oldest beyond the capacity.
    pub fn push(&mut self, output: Sample) {
        if self.outputs.len() == self.capacity {
            self.outputs.remove(0);
        }
        self.outputs.push(output);
    }

    /// The output `back` steps ago (0 = the newest), if kept.
    pub fn back(&self, back: usize) -> Option<&Sample> {
        self.outputs
            .len()
            .checked_sub(back + 1)
            .map(|i| &self.outputs[i])
    }

    /// Number of outputs kept.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Records that step `index` finished (diffusers' `lower_order_nums += 1` up to the order).
    pub fn finish(&mut self, index: usize, order: usize) {
        self.lower_order_nums = (self.lower_order_nums + 1).min(order);
        self.next_index = Some(index + 1);
    }
}

/// The newest `back`-th output of a history the solver logic guarantees exists.
pub fn kept(history: &History, back: usize) -> Result<&Sample, SchedulerError> {
    history.back(back).ok_or_else(|| {
        SchedulerError::Config(format!(
            "multistep history holds {} outputs, step needs {}",
            history.len(),
            back + 1
        ))
    })
}
