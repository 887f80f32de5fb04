//! Small statistics shared by the stages and their tests.

/// Median of `v` (the mean of the middle two for an even count; 0 when empty). NaN sorts
/// last (`total_cmp`).
pub fn median<V: AsRef<[f64]>>(v: V) -> f64 {
    let mut w = v.as_ref().to_vec();
    if w.is_empty() {
        return 0.0;
    }
    w.sort_by(|a, b| a.total_cmp(b));
    let n = w.len();
    if n % 2 == 1 {
        w[n / 2]
    } else {
        0.5 * (w[n / 2 - 1] + w[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
