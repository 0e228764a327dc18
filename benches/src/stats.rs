//! Percentiles and table rows.

/// The `p`th percentile (nearest rank) of `v`; sorts `v`.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A markdown table row: `| name | runs | p50 | p99 |` (milliseconds).
pub fn row(name: &str, v: &mut [f64]) -> String {
    format!(
        "| {name} | {} | {:.2} | {:.2} |",
        v.len(),
        pct(v, 50.0),
        pct(v, 99.0)
    )
}

/// Milliseconds in a duration.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=20).map(f64::from).collect();
        v.reverse();
        assert_eq!(pct(&mut v, 50.0), 10.0);
        assert_eq!(pct(&mut v, 99.0), 20.0);
        assert!(pct(&mut [], 50.0).is_nan());
    }
}
