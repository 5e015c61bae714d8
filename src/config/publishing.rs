//! `[controllers]`, `[grants]` and `[schedules]`: who owns the data, who may
//! receive which of it, and when exports are made.

use super::*;
use crate::config::ExportSchedule as Checked;
use crate::export::Format;
use crate::records::Kind;
use crate::records::trend::Disclosure;

/// Reads age recipients, one a line (`#` comments and blank lines skipped).
pub fn parse_age_recipients(text: &str) -> Result<Vec<age::x25519::Recipient>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse::<age::x25519::Recipient>()
                .map_err(|e| format!("not an age recipient: {e}"))
        })
        .collect()
}

impl AgeRecipients {
    /// Every recipient of `list`, files read now (a demo identity's
    /// recipient may have been written since the config was read).
    pub fn read_all(list: &[AgeRecipients]) -> Result<Vec<age::x25519::Recipient>, String> {
        let mut all = Vec::new();
        for entry in list {
            let parsed = match entry {
                AgeRecipients::Line(line) => parse_age_recipients(line),
                AgeRecipients::File(path) => std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|text| parse_age_recipients(&text)),
            };
            all.extend(parsed?);
        }
        if all.is_empty() {
            return Err("no recipients".into());
        }
        Ok(all)
    }
}

impl Checker<'_> {
    pub(super) fn partner_age(
        &mut self,
        partner: &str,
        raw: raw::PartnerAge,
        base: &Path,
    ) -> PartnerAge {
        let demo_identity = raw.demo_identity.as_deref().map(|p| join(base, p));
        let demo_public = demo_identity
            .as_ref()
            .map(|p| PathBuf::from(format!("{}.pub", p.display())));
        if raw.recipients.get_ref().is_empty() {
            self.at(
                &raw.recipients,
                format!("partner `{partner}`: `age.recipients` needs at least one recipient"),
            );
        }
        let recipients = self.recipients(&raw.recipients, base, demo_public.as_deref());
        PartnerAge {
            recipients,
            demo_identity,
        }
    }

    /// Reads `encrypt_to`-style recipient lists: `age1...` lines or files.
    fn recipients(
        &mut self,
        list: &Spanned<Vec<Spanned<String>>>,
        base: &Path,
        demo: Option<&Path>,
    ) -> Vec<AgeRecipients> {
        let mut recipients = Vec::new();
        for entry in list.get_ref() {
            let text = entry.get_ref().trim();
            if text.starts_with("age1") {
                if let Err(e) = parse_age_recipients(text) {
                    self.at(entry, e);
                }
                recipients.push(AgeRecipients::Line(text.to_string()));
                continue;
            }
            let path = join(base, text);
            match std::fs::read_to_string(&path) {
                Ok(content) => {
                    if let Err(e) = parse_age_recipients(&content) {
                        self.at(entry, format!("{}: {e}", path.display()));
                    }
                }
                // A demo identity's recipient is written on first run.
                Err(_) if demo == Some(path.as_path()) => {}
                Err(e) => self.at(entry, format!("cannot read {}: {e}", path.display())),
            }
            recipients.push(AgeRecipients::File(path));
        }
        recipients
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn route(
        &mut self,
        name: &str,
        raw: raw::Route,
        partners: &BTreeMap<String, Partner>,
        feeds: &BTreeMap<String, Feed>,
        destinations: &BTreeMap<String, Destination>,
        grants: &BTreeMap<String, Grant>,
        base: &Path,
    ) -> Option<Route> {
        let what = format!("route `{name}`");
        let mut ok = true;
        let feed = feeds.get(raw.feed.get_ref());
        if feed.is_none() {
            self.at(
                &raw.feed,
                format!("{what}: no feed `{}`", raw.feed.get_ref()),
            );
            ok = false;
        }
        if !destinations.contains_key(raw.destination.get_ref()) {
            self.at(
                &raw.destination,
                format!(
                    "{what}: no destination `{}` under [destinations]",
                    raw.destination.get_ref()
                ),
            );
            ok = false;
        }
        let consumer = raw.consumer.get_ref();
        if !partners.contains_key(consumer) {
            self.at(
                &raw.consumer,
                format!("{what}: consumer `{consumer}` is not a partner"),
            );
            ok = false;
        }
        if let Some(feed) = feed {
            let controller = partners
                .get(&feed.partner)
                .and_then(|p| p.controller.as_deref());
            let kinds = feed.kinds();
            let granted = grants.values().any(|g| {
                g.consumer == *consumer
                    && Some(g.controller.as_str()) == controller
                    && g.covers_feed(&feed.name, &kinds)
            });
            if ok && !granted {
                self.at(
                    &raw.feed,
                    format!(
                        "{what}: no grant gives `{consumer}` the files of feed `{}`; its partner's data controller must grant them first (the feed, or every kind it maps)",
                        feed.name
                    ),
                );
                ok = false;
            }
        }
        let when = self.choice(
            &raw.when,
            &what,
            "when",
            &[
                ("loaded", RouteWhen::Loaded),
                ("received", RouteWhen::Received),
            ],
        )?;
        let encrypt_to = raw.encrypt_to.as_ref().map(|list| {
            if list.get_ref().is_empty() {
                self.at(
                    list,
                    format!("{what}: `encrypt_to` needs at least one recipient"),
                );
            }
            self.recipients(list, base, None)
        });
        ok.then(|| Route {
            name: name.to_string(),
            feed: raw.feed.into_inner(),
            destination: raw.destination.into_inner(),
            consumer: consumer.clone(),
            when,
            encrypt_to,
        })
    }

    pub(super) fn partner_receipts(
        &mut self,
        partner: &str,
        raw: raw::PartnerReceipts,
        destinations: &BTreeMap<String, Destination>,
        base: &Path,
    ) -> Receipts {
        if let Some(destination) = &raw.destination
            && !destinations.contains_key(destination.get_ref())
        {
            self.at(
                destination,
                format!(
                    "partner `{partner}`: no destination `{}` under [destinations] for its receipts",
                    destination.get_ref()
                ),
            );
        }
        Receipts {
            folder: raw.folder.as_deref().map(|f| join(base, f)),
            destination: raw.destination.map(Spanned::into_inner),
        }
    }

    pub(super) fn partner_controllers(
        &mut self,
        raw: &[(Spanned<String>, Option<Spanned<String>>)],
        controllers: &BTreeMap<String, Controller>,
    ) {
        for (partner, controller) in raw {
            if let Some(controller) = controller
                && !controllers.contains_key(controller.get_ref())
            {
                self.at(
                    controller,
                    format!(
                        "partner `{}`: controller `{}` is not declared under [controllers]",
                        partner.get_ref(),
                        controller.get_ref()
                    ),
                );
            }
        }
    }

    fn kinds(&mut self, raw: &Spanned<Vec<Spanned<String>>>, what: &str) -> Vec<Kind> {
        if raw.get_ref().is_empty() {
            self.at(
                raw,
                format!("{what}: `records` needs at least one record kind"),
            );
        }
        let mut kinds = Vec::new();
        for name in raw.get_ref() {
            match Kind::from_name(name.get_ref()) {
                Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
                Some(_) => self.at(
                    name,
                    format!("{what}: `{}` is listed twice", name.get_ref()),
                ),
                None => self.at(
                    name,
                    format!(
                        "{what}: unknown record kind `{}`, expected one of {}",
                        name.get_ref(),
                        Kind::ALL.map(|k| format!("`{k}`")).join(", ")
                    ),
                ),
            }
        }
        kinds
    }

    /// One of `options` by name (the first when absent), or `None` (reported).
    fn choice<T: Copy>(
        &mut self,
        raw: &Option<Spanned<String>>,
        what: &str,
        key: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let Some(value) = raw else {
            return Some(options[0].1);
        };
        if let Some((_, chosen)) = options.iter().find(|(name, _)| name == value.get_ref()) {
            return Some(*chosen);
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
        self.at(
            value,
            format!(
                "{what}: {key} `{}` must be {}",
                value.get_ref(),
                names.join(" or ")
            ),
        );
        None
    }

    fn day(&mut self, raw: &Spanned<String>, what: &str) -> Option<chrono::NaiveDate> {
        match chrono::NaiveDate::parse_from_str(raw.get_ref(), "%Y-%m-%d") {
            Ok(day) => Some(day),
            Err(_) => {
                self.at(raw, format!("{what} must be a date, `YYYY-MM-DD`"));
                None
            }
        }
    }

    pub(super) fn grant(
        &mut self,
        name: &str,
        raw: raw::Grant,
        controllers: &BTreeMap<String, Controller>,
        partners: &BTreeMap<String, Partner>,
        feeds: &BTreeMap<String, Feed>,
    ) -> Option<Grant> {
        let what = format!("grant `{name}`");
        let mut ok = true;
        let controller = raw.controller.get_ref();
        if !controllers.contains_key(controller) {
            self.at(
                &raw.controller,
                format!("{what}: controller `{controller}` is not declared under [controllers]"),
            );
            ok = false;
        }
        if !partners.contains_key(raw.consumer.get_ref()) {
            self.at(
                &raw.consumer,
                format!(
                    "{what}: consumer `{}` is not a partner",
                    raw.consumer.get_ref()
                ),
            );
            ok = false;
        }
        let records = self.kinds(&raw.records, &what);
        let grant_feeds = raw.feeds.map(|list| {
            let mut names = Vec::new();
            for feed in list.get_ref() {
                let owner = feeds
                    .get(feed.get_ref())
                    .and_then(|f| partners.get(&f.partner))
                    .map(|p| p.controller.as_deref());
                match owner {
                    None => self.at(feed, format!("{what}: no feed `{}`", feed.get_ref())),
                    Some(owner) if owner != Some(controller.as_str()) => self.at(
                        feed,
                        format!(
                            "{what}: feed `{}` comes from a partner whose data `{controller}` does not control",
                            feed.get_ref()
                        ),
                    ),
                    Some(_) => names.push(feed.get_ref().clone()),
                }
            }
            names
        });
        if raw.purpose.get_ref().trim().is_empty() {
            self.at(&raw.purpose, format!("{what}: `purpose` must say why"));
        }
        let valid_from = self.day(&raw.valid_from, "valid_from");
        let valid_until = match &raw.valid_until {
            Some(until) => Some(self.day(until, "valid_until")?),
            None => None,
        };
        let valid_from = valid_from?;
        if let (Some(until), Some(raw_until)) = (valid_until, &raw.valid_until)
            && until < valid_from
        {
            self.at(
                raw_until,
                format!("{what}: valid_until is before valid_from"),
            );
        }
        (ok && !records.is_empty()).then(|| Grant {
            name: name.to_string(),
            controller: controller.clone(),
            consumer: raw.consumer.into_inner(),
            records,
            feeds: grant_feeds,
            purpose: raw.purpose.into_inner(),
            valid_from,
            valid_until,
        })
    }

    pub(super) fn schedule(
        &mut self,
        name: &str,
        raw: raw::Schedule,
        partners: &BTreeMap<String, Partner>,
        grants: &BTreeMap<String, Grant>,
        destinations: &BTreeMap<String, Destination>,
    ) -> Option<Checked> {
        let what = format!("schedule `{name}`");
        let consumer = raw.consumer.get_ref();
        match partners.get(consumer) {
            None => {
                self.at(
                    &raw.consumer,
                    format!("{what}: consumer `{consumer}` is not a partner"),
                );
                return None;
            }
            Some(p) if !p.sftp.as_ref().is_some_and(|s| s.outbox) => {
                self.at(
                    &raw.consumer,
                    format!(
                        "{what}: exports are delivered into the consumer's outbox; give `{consumer}` an SFTP account with `outbox = true`"
                    ),
                );
            }
            Some(_) => {}
        }
        let cron = match crate::schedule::Cron::parse(raw.cron.get_ref(), self.time_zone) {
            Ok(cron) => Some(cron),
            Err(e) => {
                self.at(&raw.cron, format!("{what}: {e}"));
                None
            }
        };
        let mode = self.choice(
            &raw.mode,
            &what,
            "mode",
            &[
                ("incremental", ExportMode::Incremental),
                ("snapshot", ExportMode::Snapshot),
            ],
        )?;
        let catch_up = self.choice(
            &raw.catch_up,
            &what,
            "catch_up",
            &[("once", CatchUp::Once), ("skip", CatchUp::Skip)],
        )?;
        if raw.formats.get_ref().is_empty() {
            self.at(
                &raw.formats,
                format!("{what}: `formats` needs at least one format"),
            );
        }
        let mut formats = Vec::new();
        for format in raw.formats.get_ref() {
            match Format::from_name(format.get_ref()) {
                Some(f) if !formats.contains(&f) => formats.push(f),
                Some(_) => self.at(
                    format,
                    format!("{what}: `{}` is listed twice", format.get_ref()),
                ),
                None => self.at(
                    format,
                    format!(
                        "{what}: unknown format `{}`, expected one of {}",
                        format.get_ref(),
                        Format::ALL.map(|f| format!("`{}`", f.name())).join(", ")
                    ),
                ),
            }
        }
        let records = self.kinds(&raw.records, &what);
        let encrypt = raw.encrypt.unwrap_or(false);
        let mut disclosure = Disclosure::default();
        for (raw_value, slot, what_key) in [
            (
                &raw.suppress_below,
                &mut disclosure.suppress_below,
                "suppress_below",
            ),
            (&raw.round_to, &mut disclosure.round_to, "round_to"),
        ] {
            if let Some(value) = raw_value {
                match u64::try_from(*value.get_ref()) {
                    Ok(n) if (1..=1000).contains(&n) => *slot = n,
                    _ => self.at(
                        value,
                        format!("{what}: {what_key} must be between 1 and 1000"),
                    ),
                }
            }
        }
        if records.contains(&Kind::Trend) && !formats.contains(&Format::Csv) {
            self.at(
                &raw.formats,
                format!("{what}: `trend` counts are written as CSV; add `csv` to `formats`"),
            );
        }
        let mut pushed = Vec::new();
        for name in raw.destinations.iter().flat_map(|d| d.get_ref()) {
            if !destinations.contains_key(name.get_ref()) {
                self.at(
                    name,
                    format!(
                        "{what}: no destination `{}` under [destinations]",
                        name.get_ref()
                    ),
                );
            } else if !pushed.contains(name.get_ref()) {
                pushed.push(name.get_ref().clone());
            }
        }
        if encrypt && partners.get(consumer).is_some_and(|p| p.age.is_none()) {
            self.at(
                &raw.consumer,
                format!(
                    "{what}: `encrypt = true` needs the consumer's recipients under [partners.{consumer}.age]"
                ),
            );
        }
        // No grant, no data: a kind no grant gives this consumer is refused here.
        for (kind, at) in records.iter().zip(raw.records.get_ref()) {
            let granted = grants
                .values()
                .any(|g| g.consumer == *consumer && g.records.contains(kind));
            if !granted {
                self.at(
                    at,
                    format!(
                        "{what}: no grant gives `{consumer}` `{kind}` records; a data controller's grant under [grants] must come first"
                    ),
                );
            }
        }
        Some(Checked {
            name: name.to_string(),
            consumer: consumer.clone(),
            cron: cron?,
            mode,
            formats,
            records,
            catch_up,
            encrypt,
            destinations: pushed,
            disclosure,
        })
    }
}
