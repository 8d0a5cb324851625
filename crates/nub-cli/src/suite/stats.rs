//! Summaries of a row's samples: the median and the 99th percentile, by
//! nearest rank over the sorted samples.

/// What `nub bench` reports of one row's samples (in the row's unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many samples were taken.
    pub samples: usize,
    /// The median (nearest rank: the lower middle of an even count).
    pub median: f64,
    /// The 99th percentile (nearest rank).
    pub p99: f64,
}

/// Summarizes `samples` (sorted in place); `None` when there are none.
pub fn summarize(samples: &mut [f64]) -> Option<Summary> {
    samples.sort_by(f64::total_cmp);
    Some(Summary {
        samples: samples.len(),
        median: nearest_rank(samples, 0.5)?,
        p99: nearest_rank(samples, 0.99)?,
    })
}

/// The `q` quantile (0 < q <= 1) of `sorted` by nearest rank: the smallest
/// sample with at least `q` of all samples at or below it.
fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    // n is a sample count, far below 2^52: the float is exact.
    let rank = (q * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n.max(1)) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = summarize(&mut v).unwrap();
        assert_eq!(
            s,
            Summary {
                samples: 100,
                median: 50.0,
                p99: 99.0
            }
        );

        let mut odd = vec![3.0, 1.0, 2.0];
        let s = summarize(&mut odd).unwrap();
        assert_eq!((s.median, s.p99), (2.0, 3.0));
    }

    #[test]
    fn a_single_sample_is_its_own_median_and_p99() {
        let s = summarize(&mut [7.5]).unwrap();
        assert_eq!((s.samples, s.median, s.p99), (1, 7.5, 7.5));
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(summarize(&mut []), None);
    }

    #[test]
    fn p99_sees_the_tail() {
        let mut v = vec![1.0; 1000];
        v[17] = 500.0;
        v[400] = 600.0;
        v[999] = 700.0;
        let s = summarize(&mut v).unwrap();
        assert_eq!(s.median, 1.0);
        assert_eq!(
            s.p99, 1.0,
            "3 outliers in 1000 are above the 99th percentile"
        );
        v.iter_mut().take(20).for_each(|x| *x = 300.0);
        let s = summarize(&mut v).unwrap();
        assert_eq!(s.p99, 300.0);
    }
}
