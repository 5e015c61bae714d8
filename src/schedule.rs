//! When something recurring runs: every fixed interval, or at the times a
//! cron expression names in the configured time zone (Europe/London unless
//! the config says otherwise), so `0 7 * * *` is seven o'clock on the wall
//! clock in both GMT and BST.

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<Cron>),
}

impl Schedule {
    /// How long to wait from `now` until the next run.
    pub fn wait_from(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Schedule::Every(interval) => *interval,
            Schedule::Cron(cron) => cron
                .next_after(now)
                .and_then(|next| (next - now).to_std().ok())
                // An expression with no future time (a past year) never runs again.
                .unwrap_or(Duration::MAX),
        }
    }
}

impl Schedule {
    /// How long to wait from `now` before trying again after a failure that
    /// a backoff would have waited `backoff` for. On a timetable the retries
    /// stop at the next time it names: that run takes over, and a long
    /// backoff never carries a source past its own timetable.
    pub fn retry_from(&self, now: DateTime<Utc>, backoff: Duration) -> Duration {
        match self {
            Schedule::Every(_) => backoff,
            Schedule::Cron(_) => backoff.min(self.wait_from(now)),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(interval) => {
                write!(f, "every {}", humantime::format_duration(*interval))
            }
            Schedule::Cron(cron) => write!(f, "cron `{}` ({})", cron.text, cron.zone),
        }
    }
}

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    schedule: cron::Schedule,
    zone: Tz,
    text: String,
}

impl Cron {
    /// Reads a crontab-style expression: five fields (minute hour
    /// day-of-month month day-of-week), or six or seven with seconds first
    /// and an optional year last. Day numbers count from Sunday = 0 as in
    /// crontab. Unlike crontab, when both day-of-month and day-of-week are
    /// restricted a time must match both.
    pub fn parse(text: &str, zone: Tz) -> Result<Cron, String> {
        let fields = text.split_whitespace().count();
        let mut parts: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        let full = match fields {
            5..=7 => {
                // Day of week: the fifth field, or the sixth after seconds.
                let days = if fields == 5 { 4 } else { 5 };
                parts[days] = crontab_days(&parts[days])?;
                if fields == 5 {
                    parts.insert(0, "0".to_string());
                }
                parts.join(" ")
            }
            n => {
                return Err(format!(
                    "`{text}` has {n} fields; expected 5 (minute hour day-of-month month day-of-week), or 6-7 with seconds first"
                ));
            }
        };
        let schedule = full
            .parse::<cron::Schedule>()
            .map_err(|e| format!("`{text}` is not a cron expression: {e}"))?;
        Ok(Cron {
            schedule,
            zone,
            text: text.to_string(),
        })
    }

    /// The first time strictly after `now`, reading the expression on the
    /// wall clock as crontab does: a time the spring change skips runs once,
    /// when the clocks go forward; a time the autumn change repeats runs
    /// once, at its first occurrence.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The expression is walked in naive wall-clock time (as if UTC, which
        // has no changes), and each wall-clock time is then placed in the zone.
        let wall_now = now.with_timezone(&self.zone).naive_local().and_utc();
        // A repeated hour puts `wall_now` back before times already run: skip
        // those. Bounded, in case an expression names only past times.
        for wall in self.schedule.after(&wall_now).take(10_000) {
            let at = match self.zone.from_local_datetime(&wall.naive_utc()) {
                LocalResult::Single(t) => t.with_timezone(&Utc),
                LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
                LocalResult::None => self.end_of_gap(wall.naive_utc()),
            };
            if at > now {
                return Some(at);
            }
        }
        None
    }

    /// The instant clocks went forward past `wall`, a wall-clock time that
    /// does not exist.
    fn end_of_gap(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        let before = self
            .zone
            .offset_from_utc_datetime(&(wall - TimeDelta::hours(24)));
        // `wall` read at the offset in force before the change lies after the
        // change; walk back a minute at a time to where the change happened.
        let mut at = wall.and_utc() - TimeDelta::seconds(i64::from(before.fix().local_minus_utc()));
        let step = TimeDelta::minutes(1);
        for _ in 0..(24 * 60) {
            if (at - step).with_timezone(&self.zone).naive_local() < wall {
                break;
            }
            at -= step;
        }
        at.with_timezone(&Utc)
    }
}

/// Crontab numbers days 0-7 from Sunday (0 and 7 both Sunday); the cron
/// crate numbers them 1-7 from Sunday. Numbers become names, which both
/// read alike, in every form of expression.
fn crontab_days(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let name = |n: &str| -> Result<String, String> {
        match n.parse::<usize>() {
            Ok(i) if i < NAMES.len() => Ok(NAMES[i].to_string()),
            Ok(_) => Err(format!("day of week `{n}` is out of range 0-7")),
            Err(_) => Ok(n.to_string()),
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let range = match range.split_once('-') {
            // Saturday to Sunday wraps in the crate's numbering: split it.
            Some((from, "7")) if step.is_none() && from != "7" => {
                let from = name(from)?;
                if from == "Sat" {
                    "Sat,Sun".to_string()
                } else {
                    format!("{from}-Sat,Sun")
                }
            }
            Some((from, to)) => format!("{}-{}", name(from)?, name(to)?),
            None => name(range)?,
        };
        items.push(match step {
            Some(step) => format!("{range}/{step}"),
            None => range,
        });
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn london(text: &str) -> Cron {
        Cron::parse(text, chrono_tz::Europe::London).unwrap()
    }

    #[test]
    fn five_field_expressions_run_on_the_london_wall_clock() {
        let seven = london("0 7 * * *");
        // Winter (GMT): 07:00 local is 07:00 UTC.
        assert_eq!(
            seven.next_after(utc("2026-01-10T08:00:00Z")),
            Some(utc("2026-01-11T07:00:00Z"))
        );
        // Summer (BST): 07:00 local is 06:00 UTC.
        assert_eq!(
            seven.next_after(utc("2026-07-10T05:00:00Z")),
            Some(utc("2026-07-10T06:00:00Z"))
        );
        // Across the spring change (29 March 2026, 01:00 GMT -> 02:00 BST).
        assert_eq!(
            seven.next_after(utc("2026-03-28T08:00:00Z")),
            Some(utc("2026-03-29T06:00:00Z"))
        );
    }

    /// Every time the timetable names from `from` up to `until`, as a run loop sees them.
    fn runs(cron: &Cron, from: &str, until: &str) -> Vec<DateTime<Utc>> {
        let mut at = utc(from);
        let mut out = Vec::new();
        while let Some(next) = cron.next_after(at).filter(|n| *n < utc(until)) {
            out.push(next);
            at = next;
        }
        out
    }

    #[test]
    fn a_time_the_spring_change_skips_runs_once_when_the_clocks_go_forward() {
        // 01:30 does not exist in London on 29 March 2026 (01:00 GMT -> 02:00 BST).
        let half_one = london("30 1 * * *");
        assert_eq!(
            runs(&half_one, "2026-03-28T02:00:00Z", "2026-03-30T12:00:00Z"),
            [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]
        );
    }

    #[test]
    fn a_time_the_autumn_change_repeats_runs_once() {
        // 01:30 happens twice in London on 25 October 2026 (02:00 BST -> 01:00 GMT).
        let half_one = london("30 1 * * *");
        assert_eq!(
            runs(&half_one, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // Started between the two 01:30s, it waits for the next night.
        assert_eq!(
            half_one.next_after(utc("2026-10-25T01:00:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        // An hourly timetable runs at each of the repeated hour's times once.
        let hourly = london("0 * * * *");
        assert_eq!(
            runs(&hourly, "2026-10-24T23:30:00Z", "2026-10-25T02:30:00Z"),
            [utc("2026-10-25T00:00:00Z"), utc("2026-10-25T02:00:00Z")]
        );
    }

    #[test]
    fn seconds_and_steps_are_read() {
        let every_quarter = london("0 */15 * * * *");
        assert_eq!(
            every_quarter.next_after(utc("2026-01-10T08:01:00Z")),
            Some(utc("2026-01-10T08:15:00Z"))
        );
        let weekdays = london("0 0 6 * * 1-5");
        // 10 January 2026 is a Saturday.
        assert_eq!(
            weekdays.next_after(utc("2026-01-10T08:00:00Z")),
            Some(utc("2026-01-12T06:00:00Z"))
        );
    }

    #[test]
    fn crontab_day_numbers_count_from_sunday() {
        // 10 January 2026 is a Saturday.
        let from = utc("2026-01-10T08:00:00Z");
        let next = |days: &str| london(&format!("0 6 * * {days}")).next_after(from).unwrap();
        assert_eq!(next("1-5"), utc("2026-01-12T06:00:00Z"), "Monday");
        assert_eq!(next("0"), utc("2026-01-11T06:00:00Z"), "Sunday");
        assert_eq!(next("7"), utc("2026-01-11T06:00:00Z"), "Sunday");
        assert_eq!(
            next("6"),
            utc("2026-01-10T06:00:00Z") + chrono::Duration::days(7)
        );
        assert_eq!(next("5-7"), utc("2026-01-11T06:00:00Z"), "Friday to Sunday");
        assert_eq!(next("2,4"), utc("2026-01-13T06:00:00Z"), "Tuesday");
    }

    #[test]
    fn day_of_month_and_day_of_week_must_both_match() {
        // Unlike crontab (either): the 1st of a month that is a Monday.
        let first_monday = london("0 6 1 * 1");
        assert_eq!(
            first_monday.next_after(utc("2026-01-10T08:00:00Z")),
            Some(utc("2026-06-01T05:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        let zone = chrono_tz::Europe::London;
        assert!(
            Cron::parse("0 7 * *", zone)
                .unwrap_err()
                .contains("4 fields")
        );
        assert!(
            Cron::parse("0 25 * * *", zone)
                .unwrap_err()
                .contains("not a cron expression")
        );
    }

    #[test]
    fn retries_on_a_timetable_stop_at_its_next_time() {
        let schedule = Schedule::Cron(Box::new(london("*/5 * * * *")));
        let now = utc("2026-01-10T07:04:00Z");
        let backoff = Duration::from_secs(300);
        assert_eq!(schedule.retry_from(now, backoff), Duration::from_secs(60));
        assert_eq!(
            schedule.retry_from(now, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        let every = Schedule::Every(Duration::from_secs(60));
        assert_eq!(every.retry_from(now, backoff), backoff);
    }

    #[test]
    fn the_wait_is_until_the_next_time() {
        let schedule = Schedule::Cron(Box::new(london("0 7 * * *")));
        assert_eq!(
            schedule.wait_from(utc("2026-01-10T06:59:30Z")),
            Duration::from_secs(30)
        );
        let every = Schedule::Every(Duration::from_secs(60));
        assert_eq!(
            every.wait_from(utc("2026-01-10T06:59:30Z")),
            Duration::from_secs(60)
        );
    }
}
