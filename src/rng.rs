//! Seeded noise that means the same as in diffusers: `torch.Generator("cpu").manual_seed(seed)`
//! followed by `torch.randn(shape, generator=g)` calls, reproduced on the CPU.
//!
//! PyTorch's CPU generator is a 32-bit Mersenne Twister (mt19937). `randn` of float32 takes one
//! of two paths (aten/src/ATen/native/cpu/DistributionTemplates.h):
//! - 16 or more elements (`normal_fill`): fill the tensor with uniforms `u = (r & 0xFFFFFF) * 2^-24`
//!   from 32-bit draws, then Box-Muller over blocks of 16 (pairs j and j + 8:
//!   `sqrt(-2 ln(1 - u_j)) * cos/sin(2 pi u_{j+8})`); when the size is not a multiple of 16 the
//!   last 16 values are drawn again and recomputed, so `randn(17)` is not a prefix of `randn(100)`.
//! - fewer than 16 (`normal_distribution<double>`): per element, two 53-bit uniforms from 64-bit
//!   draws, `sqrt(-2 ln(1 - u2)) * cos(2 pi u1)`, and the `sin` twin cached in the generator for
//!   the next scalar normal.
//!
//! Successive draws continue one stream, as diffusers draws the initial latents, the img2img
//! posterior sample and added noise, then each ancestral step's noise.

use ndarray::{ArrayD, IxDyn};

use crate::schedulers::NoiseSource;

/// A fresh random seed in A1111's range (0 to 2^32 - 1), for requests that ask for one (-1).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    hasher.finish() & 0xFFFF_FFFF
}

/// The 32-bit Mersenne Twister (Matsumoto & Nishimura 1998), seeded like PyTorch's
/// `at::mt19937` (`init_genrand` of the low 32 bits of the seed).
#[derive(Clone)]
pub struct Mt19937 {
    state: Box<[u32; 624]>,
    index: usize,
}

impl Mt19937 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        let mut state = Box::new([0u32; 624]);
        state[0] = seed as u32;
        for i in 1..624 {
            let previous = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(previous ^ (previous >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: 624 }
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// PyTorch's `random64`: two draws, the first in the high half.
    pub fn next_u64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        let low = u64::from(self.next_u32());
        (high << 32) | low
    }
}

/// `torch.Generator("cpu").manual_seed(seed)` as a [`NoiseSource`].
#[derive(Clone)]
pub struct TorchCpuRng {
    engine: Mt19937,
    /// The cached second Box-Muller value of the scalar (double) path.
    next_double_normal: Option<f64>,
}

impl TorchCpuRng {
    /// A generator seeded like `manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        Self {
            engine: Mt19937::new(seed),
            next_double_normal: None,
        }
    }

    /// Uniform float32 in [0, 1) from 24 random bits (`uniform_real_distribution<float>`).
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform double in [0, 1) from 53 random bits (`uniform_real_distribution<double>`).
    fn uniform_f64(&mut self) -> f64 {
        (self.engine.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One standard normal of the scalar path (`normal_distribution<double>`).
    fn scalar_normal(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let radius = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(radius * theta.sin());
        radius * theta.cos()
    }

    /// `torch.randn(n)` flattened: the values of the next draw of `n` elements.
    pub fn randn_values(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.scalar_normal() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for value in tail.iter_mut() {
                *value = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// PyTorch's `normal_fill_16`: pairs (j, j + 8) of uniforms to two normals, in float32.
fn box_muller_16(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f32::consts::PI * u2;
        block[j] = radius * theta.cos();
        block[j + 8] = radius * theta.sin();
    }
}

impl NoiseSource for TorchCpuRng {
    fn randn(&mut self, shape: &[usize]) -> ArrayD<f32> {
        let n = shape.iter().product();
        let values = self.randn_values(n);
        // The length always matches the shape's product.
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The 10000th output of mt19937 seeded with 5489 is 4123659995 (C++ [rand.predef]).
        let mut engine = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = engine.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }
}

/// Philox 4x32-10 normals as PyTorch's CUDA generator produces them, computed on the CPU
/// (AUTOMATIC1111's "NV" RNG, `modules/rng_philox.py`; stable-diffusion.cpp's `cuda` RNG).
///
/// Element i of the k-th draw runs Philox with counter (k, 0, i, 0) and key = the seed's two
/// 32-bit halves; the first two output words become one normal through the sine branch of
/// Box-Muller (`sqrt(-2 ln u) * sin(v)`), computed in double and rounded to float32.
#[derive(Debug, Clone)]
pub struct PhiloxRng {
    seed: u64,
    offset: u32,
}

const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

impl PhiloxRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, offset: 0 }
    }

    /// Philox 4x32 with 10 rounds.
    fn philox4x32_10(mut counter: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
        for round in 0..10 {
            if round > 0 {
                key[0] = key[0].wrapping_add(PHILOX_W[0]);
                key[1] = key[1].wrapping_add(PHILOX_W[1]);
            }
            let product0 = u64::from(counter[0]) * u64::from(PHILOX_M[0]);
            let product1 = u64::from(counter[2]) * u64::from(PHILOX_M[1]);
            let (hi0, lo0) = ((product0 >> 32) as u32, product0 as u32);
            let (hi1, lo1) = ((product1 >> 32) as u32, product1 as u32);
            counter = [
                hi1 ^ counter[1] ^ key[0],
                lo1,
                hi0 ^ counter[3] ^ key[1],
                lo0,
            ];
        }
        counter
    }

    /// The values of the next draw of `n` elements.
    pub fn randn_values(&mut self, n: usize) -> Vec<f32> {
        // The float32 constants of the reference (2^-32 and 2^-32 * 2 pi, rounded to float32),
        // then used in double arithmetic as numpy promotes uint32 * float32 to float64.
        let two_pow32_inv = f64::from(2.328_306_4e-10_f32);
        let two_pow32_inv_2pi = f64::from((2.328_306_4e-10_f64 * 6.283_185_5) as f32);
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let offset = self.offset;
        self.offset = self.offset.wrapping_add(1);
        (0..n)
            .map(|i| {
                let out = Self::philox4x32_10([offset, 0, i as u32, 0], key);
                let u = f64::from(out[0]) * two_pow32_inv + two_pow32_inv / 2.0;
                let v = f64::from(out[1]) * two_pow32_inv_2pi + two_pow32_inv_2pi / 2.0;
                ((-2.0 * u.ln()).sqrt() * v.sin()) as f32
            })
            .collect()
    }
}

impl NoiseSource for PhiloxRng {
    fn randn(&mut self, shape: &[usize]) -> ArrayD<f32> {
        let values = self.randn_values(shape.iter().product());
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
    }
}
