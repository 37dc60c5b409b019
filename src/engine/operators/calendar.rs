//! UTC calendar periods for `aggregate`'s `reset`: the start of the hour, day or month that
//! holds a time. Pure arithmetic on the proleptic Gregorian calendar, valid for every i64.

use crate::spec::Period;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// Start (epoch ms) of the period of `period` that holds `ms`.
pub fn period_start(period: Period, ms: i64) -> i64 {
    match period {
        Period::Hour => ms.div_euclid(HOUR) * HOUR,
        Period::Day => ms.div_euclid(DAY) * DAY,
        Period::Month => {
            let (year, month, _) = civil_from_days(ms.div_euclid(DAY));
            days_from_civil(year, month, 1).saturating_mul(DAY)
        }
    }
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day count since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T13:45:10.123Z
    const LEAP_DAY: i64 = 1_709_214_310_123;

    #[test]
    fn month_starts_on_the_first_at_midnight_utc() {
        assert_eq!(period_start(Period::Month, LEAP_DAY), 1_706_745_600_000); // 2024-02-01
        assert_eq!(
            period_start(Period::Month, 1_706_745_600_000),
            1_706_745_600_000
        );
        assert_eq!(
            period_start(Period::Month, 1_706_745_599_999),
            1_704_067_200_000
        ); // 2024-01-01
    }

    #[test]
    fn hour_and_day_floor_the_time() {
        assert_eq!(period_start(Period::Day, LEAP_DAY), 1_709_164_800_000);
        assert_eq!(period_start(Period::Hour, LEAP_DAY), 1_709_211_600_000); // 13:00
    }

    #[test]
    fn times_before_the_epoch_floor_downwards() {
        assert_eq!(period_start(Period::Month, -1), -2_678_400_000); // 1969-12-01
        assert_eq!(period_start(Period::Day, -1), -DAY);
    }

    #[test]
    fn civil_dates_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
