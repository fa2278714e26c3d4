//! `fit_drift`: where a value left its normal and how fast it moves since (a hinge fit).
//!
//! A degrading part often reads flat until a fault starts, then drifts: a fatigue crack
//! raises strain, a failing bearing raises vibration. A straight line over a fixed window
//! mixes the flat part with the drift; the hinge `y = a + b·max(0, x − onset)` finds the
//! onset that fits best and measures the drift from there. With the drift's level and rate,
//! a model can tell a young fault from an old one at the same level.

use crate::Moments;

/// The best hinge fit over a series of buckets; values relative to a baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drift {
    /// From the onset to `now`, in units of `x` per hour (operating hours where `x` is
    /// operating time).
    pub age_h: f64,
    /// The drift's slope per hour of `x`, as a fraction of the baseline.
    pub rate: f64,
    /// The fitted value at `now`, as a fraction of the baseline, less 1.
    pub level: f64,
    /// The share of the variance of `y` that the hinge explains (0 to 1).
    pub fit: f64,
}

const MS_PER_HOUR: f64 = 3_600_000.0;

/// One bucket's sums in floating point, with `x` (ms, stored in hours) taken from the
/// bucket's own start and `y` from a baseline: what [`fit_drift`] reads. The centring is done
/// exactly in integers first. A bucket that no longer changes keeps the same value, so a
/// caller may compute it once (per baseline) instead of at every fit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CentredMoments {
    n: f64,
    sx: f64,
    sxx: f64,
    sy: f64,
    syy: f64,
    sxy: f64,
}

impl CentredMoments {
    /// The sums of `m` (a bucket starting at `start` ms) about `start` and `baseline`.
    pub fn of(m: &Moments, start: i64, baseline: i64) -> CentredMoments {
        let (s, base, k) = (start as i128, baseline as i128, m.n as i128);
        let cx = m.sx - k * s;
        let cxx = m.sxx - 2 * s * m.sx + k * s * s;
        let cy = m.sy - k * base;
        let cyy = m.syy - 2 * base * m.sy + k * base * base;
        let cxy = m.sxy - base * m.sx - s * m.sy + k * s * base;
        CentredMoments {
            n: m.n as f64,
            sx: cx as f64 / MS_PER_HOUR,
            sxx: cxx as f64 / (MS_PER_HOUR * MS_PER_HOUR),
            sy: cy as f64,
            syy: cyy as f64,
            sxy: cxy as f64 / MS_PER_HOUR,
        }
    }

    /// The same sums with `x` taken from `d` hours before the start instead (`d` is negative
    /// for an origin after the start).
    fn shifted(&self, d: f64) -> CentredMoments {
        CentredMoments {
            n: self.n,
            sx: self.sx + self.n * d,
            sxx: self.sxx + 2.0 * d * self.sx + self.n * d * d,
            sy: self.sy,
            syy: self.syy,
            sxy: self.sxy + d * self.sy,
        }
    }
}

/// Fits `y = a + b·max(0, x − onset)` to the readings summed in `buckets`, trying every
/// bucket start as the onset, and returns the fit that leaves the least squared error.
///
/// `buckets` are `(start x, sums about that start and baseline)` in ascending order of
/// start; `x` is in milliseconds, `now` the newest `x`, `baseline` the series' own normal in
/// `y` units (the one the sums were centred on). Two passes, no allocation. `None` without a
/// positive baseline, with fewer than `min_points` readings, or when `y` does not vary.
pub fn fit_drift(
    buckets: impl DoubleEndedIterator<Item = (i64, CentredMoments)> + Clone,
    now: i64,
    baseline: i64,
    min_points: i64,
) -> Option<Drift> {
    if baseline <= 0 {
        return None;
    }
    // Each bucket's sums with X = (x − now) in hours and Y = y − baseline.
    let about_now = |(start, m): (i64, CentredMoments)| {
        let c = (start - now) as f64 / MS_PER_HOUR;
        (c, m.shifted(c))
    };
    let live = |(_, m): &(i64, CentredMoments)| m.n > 0.0;
    let (mut n, mut sy, mut syy) = (0f64, 0f64, 0f64);
    for (_, m) in buckets.clone().filter(live) {
        n += m.n;
        sy += m.sy;
        syy += m.syy;
    }
    if (n as i64) < min_points {
        return None;
    }
    let var_y = syy - sy * sy / n;
    if var_y <= 0.0 {
        return None;
    }
    // Suffix sums, newest bucket first: over the buckets from this one on, z = X − c; before
    // them z = 0.
    let (mut k, mut sx, mut sxx, mut sy_from, mut sxy) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut best: Option<(f64, f64, f64, f64)> = None;
    for (c, m) in buckets.rev().filter(live).map(about_now) {
        k += m.n;
        sx += m.sx;
        sxx += m.sxx;
        sy_from += m.sy;
        sxy += m.sxy;
        let sz = sx - k * c;
        let szz = sxx - 2.0 * c * sx + k * c * c;
        let syz = sxy - c * sy_from;
        let var_z = szz - sz * sz / n;
        if var_z <= 1e-12 {
            continue;
        }
        let cov = syz - sz * sy / n;
        let explained = cov * cov / var_z;
        if best.is_none_or(|(e, ..)| explained > e) {
            let b = cov / var_z;
            let a = sy / n - b * sz / n;
            best = Some((explained, c, b, a - b * c));
        }
    }
    let (explained, c, b, level) = best?;
    let base = baseline as f64;
    Some(Drift {
        age_h: -c,
        rate: b / base,
        level: level / base,
        fit: (explained / var_y).clamp(0.0, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    fn buckets(points: &[(i64, i64)], width: i64) -> Vec<(i64, Moments)> {
        let mut out: Vec<(i64, Moments)> = Vec::new();
        for &(x, y) in points {
            let start = x - x.rem_euclid(width);
            match out.last_mut() {
                Some((s, m)) if *s == start => {
                    use differential_dataflow::difference::Semigroup;
                    m.plus_equals(&Moments::of(x, y));
                }
                _ => out.push((start, Moments::of(x, y))),
            }
        }
        out
    }

    fn fit(points: &[(i64, i64)], width: i64, base: i64) -> Option<Drift> {
        let now = points.last()?.0;
        let b = buckets(points, width);
        fit_drift(
            b.iter().map(|(s, m)| (*s, CentredMoments::of(m, *s, base))),
            now,
            base,
            3,
        )
    }

    /// The least squared error over the same onsets, by recomputation from the points.
    fn brute(points: &[(i64, i64)], width: i64) -> f64 {
        let starts: Vec<i64> = buckets(points, width).iter().map(|(s, _)| *s).collect();
        let mut best = f64::INFINITY;
        for onset in starts {
            let z: Vec<f64> = points
                .iter()
                .map(|&(x, _)| ((x - onset).max(0) as f64) / H as f64)
                .collect();
            let y: Vec<f64> = points.iter().map(|&(_, y)| y as f64).collect();
            let n = z.len() as f64;
            let (zm, ym) = (z.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
            let vz: f64 = z.iter().map(|v| (v - zm) * (v - zm)).sum();
            if vz <= 1e-12 {
                continue;
            }
            let cov: f64 = z.iter().zip(&y).map(|(a, b)| (a - zm) * (b - ym)).sum();
            let b = cov / vz;
            let sse: f64 = z
                .iter()
                .zip(&y)
                .map(|(a, v)| {
                    let e = v - (ym + b * (a - zm));
                    e * e
                })
                .sum();
            best = best.min(sse);
        }
        best
    }

    #[test]
    fn finds_the_onset_and_rate_of_a_clean_drift() {
        // Flat at 1000 for 10 h, then +2 % of the baseline per hour for 6 h (readings rounded
        // to integers); a reading every 5 minutes, buckets of 15 minutes.
        let points: Vec<(i64, i64)> = (0..=16 * 12)
            .map(|i| {
                let x = i * H / 12;
                let h = x as f64 / H as f64;
                (x, (1000.0 + 20.0 * (h - 10.0).max(0.0)).round() as i64)
            })
            .collect();
        let d = fit(&points, H / 4, 1000).expect("a drift");
        assert!((d.age_h - 6.0).abs() < 1e-9, "{d:?}");
        assert!((d.rate - 0.02).abs() < 1e-4, "{d:?}");
        assert!((d.level - 0.12).abs() < 1e-3, "{d:?}");
        assert!(d.fit > 0.999, "{d:?}");
    }

    #[test]
    fn a_flat_series_or_no_baseline_has_no_drift() {
        let flat: Vec<(i64, i64)> = (0..40).map(|i| (i * H / 12, 500)).collect();
        assert_eq!(fit(&flat, H / 4, 500), None);
        let rising: Vec<(i64, i64)> = (0..40).map(|i| (i * H / 12, 500 + i)).collect();
        assert_eq!(fit(&rising, H / 4, 0), None);
        assert_eq!(fit(&rising[..2], H / 4, 500), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The chosen onset leaves the least squared error of all bucket starts, and the
        /// fitted line at `now` equals a recomputation at that onset.
        #[test]
        fn the_fit_is_the_best_hinge(
            ys in prop::collection::vec(-1_000i64..1_000, 4..80),
            gaps in prop::collection::vec(1i64..30, 80),
        ) {
            let mut x = 5 * H;
            let points: Vec<(i64, i64)> = ys
                .iter()
                .zip(&gaps)
                .map(|(&y, &g)| {
                    x += g * 60_000;
                    (x, 100_000 + y)
                })
                .collect();
            let base = 100_000;
            let Some(d) = fit(&points, H / 4, base) else {
                let varies = points.iter().any(|p| p.1 != points[0].1);
                prop_assert!(!varies || points.len() < 3);
                return Ok(());
            };
            let now = points.last().expect("points").0;
            let onset = now - (d.age_h * H as f64).round() as i64;
            let sse: f64 = {
                let n = points.len() as f64;
                let z: Vec<f64> =
                    points.iter().map(|&(x, _)| (x - onset).max(0) as f64 / H as f64).collect();
                let y: Vec<f64> = points.iter().map(|&(_, y)| (y - base) as f64).collect();
                let (zm, ym) = (z.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
                let b = d.rate * base as f64;
                let a = d.level * base as f64 - b * z.last().expect("points");
                prop_assert!((ym - (a + b * zm)).abs() < 1e-6 * (1.0 + ym.abs()));
                z.iter().zip(&y).map(|(z, y)| (y - a - b * z).powi(2)).sum()
            };
            let best = brute(&points, H / 4);
            prop_assert!(sse <= best * (1.0 + 1e-6) + 1e-6, "sse {sse} best {best}");
            prop_assert!((0.0..=1.0).contains(&d.fit));
        }
    }
}
