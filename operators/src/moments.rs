//! `Moments`: a difference type that carries count and power sums, so that means, variances
//! and least-squares slopes are maintained by consolidation alone and cancel exactly.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};

/// Count and sums of `x`, `y`, `x²`, `y²`, `xy` in exact integers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Moments {
    /// Number of observations.
    pub n: i64,
    /// Σx.
    pub sx: i128,
    /// Σy.
    pub sy: i128,
    /// Σx².
    pub sxx: i128,
    /// Σy².
    pub syy: i128,
    /// Σxy.
    pub sxy: i128,
}

impl Moments {
    /// The moments of one observation `(x, y)`.
    pub fn of(x: i64, y: i64) -> Moments {
        let (x, y) = (x as i128, y as i128);
        Moments {
            n: 1,
            sx: x,
            sy: y,
            sxx: x * x,
            syy: y * y,
            sxy: x * y,
        }
    }

    /// Mean of `y`.
    pub fn mean_y(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sy as f64 / self.n as f64)
    }

    /// Population standard deviation of `y`.
    pub fn stddev_y(&self) -> Option<f64> {
        if self.n <= 0 {
            return None;
        }
        let n = self.n as i128;
        // n²·var = n·Σy² − (Σy)², exact in integers before the division.
        let scaled = n * self.syy - self.sy * self.sy;
        Some(((scaled.max(0)) as f64).sqrt() / self.n as f64)
    }

    /// The least-squares line's value at `x` (the mean of `y` when there is no slope).
    pub fn predict(&self, x: i64) -> Option<f64> {
        let mean_y = self.mean_y()?;
        let mean_x = self.sx as f64 / self.n as f64;
        Some(mean_y + self.slope().unwrap_or(0.0) * (x as f64 - mean_x))
    }

    /// Least-squares slope of `y` over `x`, or `None` with fewer than two distinct `x`.
    pub fn slope(&self) -> Option<f64> {
        let n = self.n as i128;
        let denominator = n * self.sxx - self.sx * self.sx;
        if self.n < 2 || denominator <= 0 {
            return None;
        }
        Some((n * self.sxy - self.sx * self.sy) as f64 / denominator as f64)
    }
}

impl IsZero for Moments {
    fn is_zero(&self) -> bool {
        *self == Moments::default()
    }
}

impl Semigroup for Moments {
    fn plus_equals(&mut self, rhs: &Self) {
        self.n += rhs.n;
        self.sx += rhs.sx;
        self.sy += rhs.sy;
        self.sxx += rhs.sxx;
        self.syy += rhs.syy;
        self.sxy += rhs.sxy;
    }
}

impl Monoid for Moments {
    fn zero() -> Self {
        Moments::default()
    }
}

impl Abelian for Moments {
    fn negate(&mut self) {
        self.n = -self.n;
        self.sx = -self.sx;
        self.sy = -self.sy;
        self.sxx = -self.sxx;
        self.syy = -self.syy;
        self.sxy = -self.sxy;
    }
}

impl Multiply<isize> for Moments {
    type Output = Moments;
    fn multiply(self, rhs: &isize) -> Moments {
        let k = *rhs as i128;
        Moments {
            n: self.n * *rhs as i64,
            sx: self.sx * k,
            sy: self.sy * k,
            sxx: self.sxx * k,
            syy: self.syy * k,
            sxy: self.sxy * k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cancel_exactly() {
        let mut m = Moments::of(3, 10);
        m.plus_equals(&Moments::of(5, 20));
        let mut r = Moments::of(3, 10);
        r.negate();
        m.plus_equals(&r);
        assert_eq!(m, Moments::of(5, 20));
        m.plus_equals(&Moments::of(5, 20).multiply(&-1));
        assert!(m.is_zero());
    }

    #[test]
    fn slope_and_stddev() {
        let mut m = Moments::default();
        for x in 0..10 {
            m.plus_equals(&Moments::of(x, 100 - 2 * x));
        }
        assert_eq!(m.slope(), Some(-2.0));
        assert_eq!(m.mean_y(), Some(91.0));
        assert_eq!(m.predict(20), Some(60.0));
        let sd = m.stddev_y().expect("has observations");
        assert!((sd - 33f64.sqrt()).abs() < 1e-9);
    }
}
