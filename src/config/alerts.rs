//! `[feeds.NAME.expect]` and `[alerts]`: what is normal for a feed, and
//! where word goes when it is not.

use super::*;

impl Checker<'_> {
    pub(super) fn expect(&mut self, feed: &str, raw: Spanned<raw::Expect>) -> Expectations {
        let span = raw.span();
        let raw = raw.into_inner();
        let what = format!("feed `{feed}` expect");
        let no_check = raw.arrives_by.is_none()
            && raw.row_count_band.is_none()
            && raw.quarantine_rate.is_none();
        let arrives_by =
            raw.arrives_by.as_ref().and_then(|text| {
                match crate::schedule::Cron::parse(text.get_ref(), self.time_zone) {
                    Ok(cron) => Some(cron),
                    Err(e) => {
                        self.at(text, format!("{what}: arrives_by {e}"));
                        None
                    }
                }
            });
        if let (None, Some(within)) = (&raw.arrives_by, &raw.within) {
            self.at(within, format!("{what}: `within` needs `arrives_by`"));
        }
        let within = self.positive_duration(raw.within, Duration::from_secs(24 * 3600), "within");
        let row_count = self.band(
            &what,
            raw.row_count_band,
            raw.row_count_files,
            5,
            ("row_count_band", "row_count_files"),
            1..=1000,
        );
        let quarantine_rate = self.band(
            &what,
            raw.quarantine_rate,
            raw.quarantine_files,
            10,
            ("quarantine_rate", "quarantine_files"),
            0..=99,
        );
        let expect = Expectations {
            arrives_by: arrives_by.map(|cron| (cron, within)),
            row_count,
            quarantine_rate,
        };
        if no_check {
            self.warning(
                span,
                format!(
                    "{what} sets no check: give `arrives_by`, `row_count_band` or `quarantine_rate`"
                ),
            );
        }
        expect
    }

    /// A percentage and the number of files it is taken over.
    fn band(
        &mut self,
        what: &str,
        percent: Option<Spanned<i64>>,
        files: Option<Spanned<i64>>,
        default_files: u32,
        (percent_key, files_key): (&str, &str),
        percents: std::ops::RangeInclusive<i64>,
    ) -> Option<Band> {
        let files = match files {
            None => default_files,
            Some(n) if (1..=1000).contains(n.get_ref()) => {
                if percent.is_none() {
                    self.at(&n, format!("{what}: `{files_key}` needs `{percent_key}`"));
                }
                *n.get_ref() as u32
            }
            Some(n) => {
                self.at(
                    &n,
                    format!("{what}: {files_key} must be between 1 and 1000"),
                );
                default_files
            }
        };
        let percent = percent?;
        if !percents.contains(percent.get_ref()) {
            self.at(
                &percent,
                format!(
                    "{what}: {percent_key} must be between {} and {} (percent)",
                    percents.start(),
                    percents.end()
                ),
            );
            return None;
        }
        Some(Band {
            percent: *percent.get_ref() as u32,
            files,
        })
    }

    pub(super) fn alerts(
        &mut self,
        raw: raw::Alerts,
        destinations: &BTreeMap<String, Destination>,
    ) -> Alerts {
        let command = raw.command.and_then(|command| {
            match command.get_ref().first() {
                None => {
                    self.at(&command, "[alerts] command names no program");
                    None
                }
                Some(program) if !Path::new(program).is_absolute() => {
                    self.at(
                        &command,
                        format!("[alerts] command: `{program}` must be an absolute path (the daemon's PATH is not yours)"),
                    );
                    None
                }
                Some(_) => Some(command.into_inner()),
            }
        });
        let destination = raw.destination.and_then(|d| {
            if destinations.contains_key(d.get_ref()) {
                Some(d.into_inner())
            } else {
                self.at(
                    &d,
                    format!(
                        "[alerts] destination: no destination `{}` under [destinations]",
                        d.get_ref()
                    ),
                );
                None
            }
        });
        Alerts {
            command,
            destination,
        }
    }
}
