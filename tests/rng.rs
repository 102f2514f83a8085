//! The torch-compatible CPU noise source against committed `torch.randn` dumps
//! (tools/rng/make_randn_refs.py, torch 2.15 on an AVX-512 CPU).

mod common;

use sdxl_backend::npy;
use sdxl_backend::rng::TorchCpuRng;
use serde_json::Value;

/// Largest difference in units in the last place between two float32 values.
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let bits = x.to_bits() as i32;
        if bits < 0 { i32::MIN - bits } else { bits }
    };
    key(a).abs_diff(key(b))
}

#[test]
fn randn_reproduces_torch_for_every_seed_and_size() {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("rng/randn.json")).unwrap())
            .unwrap();
    let sizes: Vec<usize> = meta["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut worst = (0u32, 0usize, 0u64);
    for seed in meta["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
    {
        let reference =
            npy::read_f32(&common::fixture(&format!("rng/randn_seed_{seed}.npy"))).unwrap();
        let reference: Vec<f32> = reference.iter().copied().collect();
        let mut rng = TorchCpuRng::new(seed);
        let mut offset = 0;
        for &size in &sizes {
            let ours = rng.randn_values(size);
            for (i, (&a, &b)) in ours
                .iter()
                .zip(&reference[offset..offset + size])
                .enumerate()
            {
                let d = ulps(a, b);
                assert!(
                    d <= 4,
                    "seed {seed}, size {size}, element {i}: {a} vs torch {b} ({d} ulp)"
                );
                if d > worst.0 {
                    worst = (d, size, seed);
                }
            }
            offset += size;
        }
    }
    eprintln!(
        "worst difference: {} ulp (size {}, seed {})",
        worst.0, worst.1, worst.2
    );
}

#[test]
fn philox_reproduces_the_a1111_reference_implementation() {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("rng/philox.json")).unwrap())
            .unwrap();
    let sizes: Vec<usize> = meta["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut worst = 0u32;
    for seed in meta["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
    {
        let reference =
            npy::read_f32(&common::fixture(&format!("rng/philox_seed_{seed}.npy"))).unwrap();
        let reference: Vec<f32> = reference.iter().copied().collect();
        let mut rng = sdxl_backend::rng::PhiloxRng::new(seed);
        let mut offset = 0;
        for &size in &sizes {
            for (i, (&a, &b)) in rng
                .randn_values(size)
                .iter()
                .zip(&reference[offset..offset + size])
                .enumerate()
            {
                let d = ulps(a, b);
                assert!(d <= 1, "seed {seed}, size {size}, element {i}: {a} vs {b}");
                worst = worst.max(d);
            }
            offset += size;
        }
    }
    eprintln!("philox worst difference: {worst} ulp");
}
