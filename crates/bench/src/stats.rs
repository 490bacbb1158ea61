//! The two statistics the report uses. Medians, not means, because a benchmark run on a
//! shared machine is now and then slowed by something else (another build, a page-cache
//! miss), and one such run should not move the result; geometric means for ratios, because
//! an average of ratios must treat 2x faster and 2x slower as cancelling out.

/// The median of `values` (the mean of the two middle ones for an even count), or `None`
/// for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The geometric mean of `values`, or `None` for no values or any value that is not
/// positive and finite (a ratio of times never is).
pub fn geometric_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return None;
    }
    let log_sum: f64 = values.iter().map(|v| v.ln()).sum();
    Some((log_sum / values.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_two_middle_values() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn one_slow_outlier_does_not_move_the_median() {
        assert_eq!(median(&[1.0, 1.0, 1.0, 1.0, 100.0]), Some(1.0));
    }

    #[test]
    fn no_values_have_no_median() {
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_geometric_mean_of_reciprocal_ratios_is_one() {
        assert!(close(geometric_mean(&[2.0, 0.5]).unwrap(), 1.0));
    }

    #[test]
    fn the_geometric_mean_of_one_and_four_is_two() {
        assert!(close(geometric_mean(&[1.0, 4.0]).unwrap(), 2.0));
    }

    #[test]
    fn a_geometric_mean_needs_positive_values() {
        assert_eq!(geometric_mean(&[]), None);
        assert_eq!(geometric_mean(&[1.0, 0.0]), None);
        assert_eq!(geometric_mean(&[1.0, f64::NAN]), None);
    }
}
