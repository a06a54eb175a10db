//! Calendar arithmetic on Unix seconds (UTC, taken as the user's local time).

/// (sin, cos) of a fraction of a cycle: how cyclic features (time of day, weekday,
/// month) are written.
pub fn angle(fraction: f64) -> (f32, f32) {
    let a = std::f64::consts::TAU * fraction;
    (a.sin() as f32, a.cos() as f32)
}

/// Hour of day in [0, 24).
pub fn hour(ts: i64) -> f64 {
    ts.rem_euclid(86_400) as f64 / 3600.0
}

/// Continuous position in the week in [0, 7): Monday 00:00 = 0, Sunday 23:59 ≈ 7.
pub fn weekday(ts: i64) -> f64 {
    // 1970-01-01 was a Thursday (weekday 3).
    (ts as f64 / 86_400.0 + 3.0).rem_euclid(7.0)
}

/// Weekday index, Monday = 0 … Sunday = 6.
pub fn weekday_index(ts: i64) -> u32 {
    (ts.div_euclid(86_400) + 3).rem_euclid(7) as u32
}

/// Month of year, January = 0 (Howard Hinnant's civil-from-days).
pub fn month0(ts: i64) -> u32 {
    let z = ts.div_euclid(86_400) + 719_468;
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (m - 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // 2026-01-05 00:00 UTC is a Monday in January.
        let monday = 1_767_571_200;
        assert_eq!(weekday_index(monday), 0);
        assert!(weekday(monday).abs() < 1e-9);
        assert_eq!(month0(monday), 0);
        // 2026-03-19 15:30 UTC is a Thursday in March.
        let ts = 1_773_934_200;
        assert_eq!(weekday_index(ts), 3);
        assert_eq!(month0(ts), 2);
        assert!((hour(ts) - 15.5).abs() < 1e-9);
        // 1970-01-01 was a Thursday, 1969-12-31 a Wednesday.
        assert_eq!(weekday_index(0), 3);
        assert_eq!(weekday_index(-1), 2);
        assert_eq!(month0(-1), 11);
    }
}
