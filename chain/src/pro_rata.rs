//! Splitting an amount exactly in proportion to weights.

/// `total` split in proportion to `weights` by largest remainder: every part is the
/// floor of its exact share or one more, the parts add up to `total` exactly, and
/// equal remainders go to the earlier weight (callers order weights to make that
/// fair). All-zero weights give all-zero parts except that nothing is lost: the
/// whole total then goes to the first part.
pub fn pro_rata(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum == 0 {
        let mut parts = vec![0; weights.len()];
        if let Some(first) = parts.first_mut() {
            *first = total;
        }
        return parts;
    }
    // `sum` is not zero here. Each exact share total × w is below 2^128 (two 64-bit
    // factors), its floor division by `sum` ≥ w is at most `total`, and the floors add
    // up to at most `total`: none of the arithmetic below can overflow.
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = u128::from(total).saturating_mul(u128::from(*w));
        let floor = exact.checked_div(sum).unwrap_or(0);
        parts.push(u64::try_from(floor).unwrap_or(total));
        remainders.push((exact.checked_rem(sum).unwrap_or(0), i));
    }
    let given = parts.iter().fold(0u64, |a, p| a.saturating_add(*p));
    let mut left = total.saturating_sub(given);
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        if let Some(part) = parts.get_mut(i) {
            *part = part.saturating_add(1);
            left = left.saturating_sub(1);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_exactly() {
        assert_eq!(pro_rata(100, &[10, 20, 30, 40]), vec![10, 20, 30, 40]);
        assert_eq!(pro_rata(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(pro_rata(7, &[0, 0]), vec![7, 0]);
        assert_eq!(pro_rata(5, &[]), Vec::<u64>::new());
    }

    proptest! {
        #[test]
        fn parts_conserve_the_total_and_stay_within_one(
            total in 0u64..u64::MAX / 2,
            weights in prop::collection::vec(0u64..1_000_000_000_000, 1..120),
        ) {
            let parts = pro_rata(total, &weights);
            prop_assert_eq!(parts.iter().map(|p| u128::from(*p)).sum::<u128>(), u128::from(total));
            let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
            for (p, w) in parts.iter().zip(&weights) {
                if let Some(floor) = (u128::from(total) * u128::from(*w)).checked_div(sum) {
                    prop_assert!(u128::from(*p) == floor || u128::from(*p) == floor + 1);
                }
            }
        }
    }
}
