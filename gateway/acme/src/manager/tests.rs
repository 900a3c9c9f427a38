use super::*;

#[test]
fn backoff_doubles_up_to_the_maximum_with_jitter_below_the_step() {
    let (initial, max) = (Duration::from_secs(2), Duration::from_secs(10));
    let steps: Vec<_> = (1..=5)
        .map(|n| backoff(initial, max, n, 0.999_999))
        .collect();
    let secs: Vec<u64> = steps
        .iter()
        .map(|d| d.as_secs_f64().round() as u64)
        .collect();
    assert_eq!(secs, vec![2, 4, 8, 10, 10]);
    assert_eq!(backoff(initial, max, 1, 0.0), Duration::from_secs(1));
    assert_eq!(backoff(initial, max, 3, 0.0), Duration::from_secs(4));
    // No overflow after very many failures.
    assert_eq!(backoff(initial, max, u32::MAX, 0.0), Duration::from_secs(5));
}

#[test]
fn random_fractions_stay_in_range() {
    for _ in 0..1000 {
        let f = random_fraction();
        assert!((0.0..1.0).contains(&f), "{f}");
    }
}
