//! `[sources.*]` and `[destinations.*]`: where files come from and go.

use super::*;

impl Checker<'_> {
    pub(super) fn partner_ref(
        &mut self,
        partner: &Spanned<String>,
        partners: &BTreeMap<String, Partner>,
    ) -> bool {
        if partners.contains_key(partner.get_ref()) {
            return true;
        }
        let known: Vec<&str> = partners.keys().map(String::as_str).collect();
        self.at(
            partner,
            format!(
                "unknown partner `{}` (defined partners: {})",
                partner.get_ref(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
        false
    }

    pub(super) fn source(
        &mut self,
        name: &str,
        raw: raw::Source,
        partners: &BTreeMap<String, Partner>,
        base: &Path,
    ) -> Option<Source> {
        let partner_ok = self.partner_ref(&raw.partner, partners);
        let kind = raw.kind.get_ref().clone();
        let not_for = |checker: &mut Self, option: &str, span: Option<Range<usize>>| {
            if let Some(span) = span {
                checker.error(
                    span,
                    format!("source `{name}`: `{option}` does not apply to kind `{kind}`"),
                );
            }
        };
        match raw.kind.get_ref().as_str() {
            "local" => {
                for (option, span) in [
                    ("host", raw.host.as_ref().map(|v| v.span())),
                    ("user", raw.user.as_ref().map(|v| v.span())),
                    ("private_key", raw.private_key.as_ref().map(|v| v.span())),
                    ("host_key", raw.host_key.as_ref().map(|v| v.span())),
                    (
                        "password_file",
                        raw.password_file.as_ref().map(|v| v.span()),
                    ),
                    ("password_env", raw.password_env.as_ref().map(|v| v.span())),
                    ("tls", raw.tls.as_ref().map(|v| v.span())),
                    ("match", raw.patterns.as_ref().map(|v| v.span())),
                    (
                        "poll_interval",
                        raw.poll_interval.as_ref().map(|v| v.span()),
                    ),
                    ("poll_cron", raw.poll_cron.as_ref().map(|v| v.span())),
                    ("after", raw.after.as_ref().map(|v| v.span())),
                    ("done_marker", raw.done_marker.as_ref().map(|v| v.span())),
                ] {
                    not_for(self, option, span);
                }
            }
            "sftp" | "ftp" => {
                for (option, span) in [
                    ("path", raw.path.as_ref().map(|v| v.span())),
                    (
                        "check_interval",
                        raw.check_interval.as_ref().map(|v| v.span()),
                    ),
                    (
                        "rescan_interval",
                        raw.rescan_interval.as_ref().map(|v| v.span()),
                    ),
                ] {
                    not_for(self, option, span);
                }
                let partner = raw.partner.get_ref().clone();
                let source = self.remote_source(name, raw, base)?;
                return partner_ok.then(|| Source {
                    name: name.to_string(),
                    partner,
                    kind: SourceKind::Remote(Box::new(source)),
                });
            }
            other => {
                self.at(
                    &raw.kind,
                    format!("unknown source kind `{other}`, expected `local`, `sftp` or `ftp`"),
                );
                return None;
            }
        }
        let Some(path) = raw.path else {
            self.at(
                &raw.kind,
                format!("source `{name}`: a `local` source needs `path`"),
            );
            return None;
        };
        let min_age = self.duration(raw.min_age, Duration::from_secs(1));
        let check_interval = self.duration(raw.check_interval, Duration::from_millis(250));
        let rescan_interval = self.duration(raw.rescan_interval, Duration::from_secs(30));
        if check_interval.is_zero() || rescan_interval.is_zero() {
            self.at(
                &path,
                format!("source `{name}`: intervals must be above zero"),
            );
        }
        if !partner_ok {
            return None;
        }
        Some(Source {
            name: name.to_string(),
            partner: raw.partner.into_inner(),
            kind: SourceKind::Local(LocalSource {
                path: join(base, path.get_ref()),
                recursive: raw.recursive.unwrap_or(false),
                max_file_size: self.size(
                    raw.max_file_size,
                    DEFAULT_MAX_FILE_SIZE,
                    1 << 50,
                    "max_file_size",
                ),
                min_age,
                check_interval,
                rescan_interval,
            }),
        })
    }

    pub(super) fn remote_source(
        &mut self,
        name: &str,
        mut raw: raw::Source,
        base: &Path,
    ) -> Option<RemoteSource> {
        let endpoint = self.endpoint(name, &raw.kind, raw::take_login!(raw), base);
        let schedule = match (raw.poll_interval, raw.poll_cron) {
            (Some(_), Some(cron)) => {
                self.at(
                    &cron,
                    format!("source `{name}`: set `poll_interval` or `poll_cron`, not both"),
                );
                None
            }
            (interval, None) => {
                let every = self.duration(interval.clone(), Duration::from_secs(60));
                if every.is_zero() {
                    let span = interval.map(|i| i.span()).unwrap_or(0..0);
                    self.error(
                        span,
                        format!("source `{name}`: poll_interval must be above zero"),
                    );
                }
                Some(crate::schedule::Schedule::Every(every))
            }
            (None, Some(cron)) => {
                match crate::schedule::Cron::parse(cron.get_ref(), self.time_zone) {
                    Ok(c) => Some(crate::schedule::Schedule::Cron(Box::new(c))),
                    Err(e) => {
                        self.at(&cron, format!("source `{name}`: {e}"));
                        None
                    }
                }
            }
        };
        let mut globs = GlobSetBuilder::new();
        match &raw.patterns {
            None => {
                globs.add(Glob::new("*").expect("a valid glob"));
            }
            Some(patterns) => {
                for pattern in patterns.get_ref() {
                    match Glob::new(pattern.get_ref()) {
                        Ok(g) => {
                            globs.add(g);
                        }
                        Err(e) => self.at(pattern, format!("invalid glob: {}", e.kind())),
                    }
                }
            }
        }
        let after = match raw.after.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("delete") => AfterTake::Delete,
            Some("leave") => AfterTake::Leave,
            Some(other) => match other.strip_prefix("move:") {
                Some(folder) if !folder.is_empty() => AfterTake::Move(folder.to_string()),
                _ => {
                    let span = raw.after.as_ref().map(|a| a.span()).unwrap_or(0..0);
                    self.error(
                        span,
                        format!("unknown `after` = `{other}`, expected `delete`, `move:<folder>` or `leave`"),
                    );
                    AfterTake::Delete
                }
            },
        };
        let done_marker = match raw.done_marker {
            Some(marker) if marker.get_ref().is_empty() => {
                self.at(
                    &marker,
                    format!("source `{name}`: done_marker must be a suffix such as `.done`"),
                );
                None
            }
            marker => marker.map(Spanned::into_inner),
        };
        Some(RemoteSource {
            endpoint: endpoint?,
            patterns: globs.build().ok()?,
            schedule: schedule?,
            min_age: self.duration(raw.min_age, Duration::from_secs(30)),
            after,
            done_marker,
            timeout: self.positive_duration(raw.timeout, Duration::from_secs(30), "timeout"),
            backoff: crate::remote::Backoff {
                initial: self.positive_duration(
                    raw.retry_initial,
                    Duration::from_secs(5),
                    "retry_initial",
                ),
                max: self.positive_duration(raw.retry_max, Duration::from_secs(300), "retry_max"),
            },
            max_file_size: self.size(
                raw.max_file_size,
                DEFAULT_MAX_FILE_SIZE,
                1 << 50,
                "max_file_size",
            ),
        })
    }

    pub(super) fn check_overlapping_sources(
        &mut self,
        sources: &BTreeMap<String, Source>,
        name_spans: &BTreeMap<String, Range<usize>>,
    ) {
        let mut seen: Vec<(&str, &Path)> = Vec::new();
        for source in sources.values() {
            let SourceKind::Local(local) = &source.kind else {
                continue;
            };
            for (other, path) in &seen {
                if local.path.starts_with(path) || path.starts_with(&local.path) {
                    let span = name_spans.get(&source.name).cloned().unwrap_or(0..0);
                    self.error(
                        span,
                        format!(
                            "sources `{other}` and `{}` watch overlapping folders; a file would be taken twice",
                            source.name
                        ),
                    );
                }
            }
            seen.push((&source.name, &local.path));
        }
    }

    pub(super) fn destination(
        &mut self,
        name: &str,
        mut raw: raw::Destination,
        base: &Path,
    ) -> Option<Destination> {
        let endpoint = self.endpoint(name, &raw.kind, raw::take_login!(raw), base);
        let attempts = match &raw.attempts {
            None => 5,
            Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.at(n, "attempts must be between 1 and 1000");
                5
            }
        };
        let backoff = crate::remote::Backoff {
            initial: self.positive_duration(
                raw.retry_initial,
                Duration::from_secs(2),
                "retry_initial",
            ),
            max: self.positive_duration(raw.retry_max, Duration::from_secs(300), "retry_max"),
        };
        let timeout = self.positive_duration(raw.timeout, Duration::from_secs(30), "timeout");
        Some(Destination {
            name: name.to_string(),
            endpoint: endpoint?,
            attempts,
            backoff,
            timeout,
        })
    }
}
