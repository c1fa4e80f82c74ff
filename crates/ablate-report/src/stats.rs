//! The summary statistics every aggregation shares — `report.table`'s cells, a plot's points
//! and a claim's `mean(…)`/`std(…)`/`median(…)` — so one set of numbers means one thing
//! everywhere: a sample standard deviation (n − 1), summed in input order.

/// The mean of `values`, summed in input order; NaN for none.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean and sample standard deviation (n − 1) of `values`; the deviation is `None` for fewer
/// than two values (a sample standard deviation of one value is undefined), the mean NaN for
/// none. Sums run in input order, so a caller gets the same bits wherever it asks.
pub fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = mean(values);
    if values.len() < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt()))
}

/// The median of `values` (the mean of the middle two for an even count); NaN-safe ordering
/// (`total_cmp`). Panics on an empty slice: a caller has checked that there is a value.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_is_the_sample_deviation_of_a_hand_worked_example() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum to 32, 32 / 7 (n − 1).
        let (mean, std) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(mean, 5.0);
        assert!((std.unwrap() - (32.0_f64 / 7.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn mean_std_of_one_value_has_no_deviation() {
        assert_eq!(mean_std(&[0.25]), (0.25, None));
        assert!(mean_std(&[]).0.is_nan());
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
