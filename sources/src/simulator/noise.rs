//! The simulator's only source of randomness: one seeded stream and the distributions drawn from it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded random stream; every draw happens in a fixed order, so a seed fixes the run.
pub(super) struct Noise {
    rng: ChaCha8Rng,
    /// Box–Muller yields normals in pairs; the second one waits here.
    spare_normal: Option<f64>,
}

impl Noise {
    /// A stream for `seed`.
    pub(super) fn new(seed: u64) -> Noise {
        Noise {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare_normal: None,
        }
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// Uniform in `[low, high)`.
    pub(super) fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform integer in `low..=high`.
    pub(super) fn integer(&mut self, low: i64, high: i64) -> i64 {
        if high <= low {
            low
        } else {
            self.rng.random_range(low..=high)
        }
    }

    /// Uniform index below `n` (0 when `n` is 0).
    pub(super) fn index(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal.
    pub(super) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // 1 - unit() is in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * self.unit()).sin_cos();
        self.spare_normal = Some(radius * sin);
        radius * cos
    }

    /// Approximately standard normal, cheaply: the sum of four uniforms from one draw, centred
    /// and scaled to unit variance (Irwin–Hall; tails end at ±3.46). For per-reading noise.
    pub(super) fn bell(&mut self) -> f64 {
        let bits: u64 = self.rng.random();
        let sum: u64 = (0..4).map(|i| (bits >> (16 * i)) & 0xFFFF).sum();
        // Each part is uniform on 0..65536 (mean 32767.5, variance 65536² / 12).
        (sum as f64 - 4.0 * 32_767.5) * (3.0f64.sqrt() / 65_536.0)
    }

    /// Log-normal with mean 1 and log-scale spread `sigma`.
    pub(super) fn lognormal(&mut self, sigma: f64) -> f64 {
        (sigma * self.normal() - 0.5 * sigma * sigma).exp()
    }

    /// Exponential with the given mean.
    pub(super) fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Pareto with minimum `scale` and tail index 2: heavy-tailed (infinite variance), and
    /// cheap (a square root instead of a power).
    pub(super) fn pareto2(&mut self, scale: f64) -> f64 {
        scale / (1.0 - self.unit()).sqrt()
    }

    /// A duration of `low_h..high_h` hours, in milliseconds.
    pub(super) fn hours_ms(&mut self, low_h: f64, high_h: f64) -> u64 {
        (self.uniform(low_h, high_h) * 3_600_000.0) as u64
    }
}
