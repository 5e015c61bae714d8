//! Trend: what arrived each week, per partner and feed, as counts with no
//! identifiers: files by outcome (and quarantines by reason), rows and
//! records loaded (in all and by kind), observations by code and NEWS2 totals
//! by band. Weeks start on Monday and are those in which the files were
//! received (UTC).
//!
//! Small numbers are hidden before a count leaves: see [`Disclosure`].

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::observations::Code;
use crate::ledger::Result;
use crate::problem::Reason;

/// `trend` in a grant's or a schedule's `records`.
pub const KIND: &str = "trend";

/// How counts are made safe to publish: counts from 1 to `suppress_below - 1`
/// are withheld, and the others rounded to the nearest `round_to`. Zero is
/// shown as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disclosure {
    pub suppress_below: u64,
    pub round_to: u64,
}

impl Default for Disclosure {
    /// Counts of 1 to 7 withheld, the rest rounded to the nearest 5.
    fn default() -> Disclosure {
        Disclosure {
            suppress_below: 8,
            round_to: 5,
        }
    }
}

impl Disclosure {
    /// The count as published: `None` when withheld.
    pub fn disclose(self, count: u64) -> Option<u64> {
        if count == 0 {
            return Some(0);
        }
        if count < self.suppress_below {
            return None;
        }
        let step = self.round_to.max(1);
        Some((count + step / 2) / step * step)
    }
}

/// One published count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendCount {
    /// Monday of the week, `YYYY-MM-DD`.
    pub week: String,
    pub partner: String,
    /// Empty when the file matched no feed.
    pub feed: String,
    /// `files_received`, `files_loaded`, `files_quarantined`, `files_duplicate`,
    /// `quarantined:REASON`, `rows_loaded`, `records`, `records:KIND`, `observations:CODE`,
    /// `news2_band:0`, `news2_band:1-4`, `news2_band:5-6`, `news2_band:7+`.
    pub measure: String,
    /// `None` when withheld by the disclosure rule.
    pub count: Option<u64>,
}

type Key = (String, String, String, String);

/// A grouped row's week, partner and feed (its first three columns), when
/// `allowed` lets the partner's counts out.
fn place(
    r: &rusqlite::Row<'_>,
    allowed: &dyn Fn(&str, Option<&str>) -> bool,
) -> rusqlite::Result<Option<(String, String, String)>> {
    let (week, partner, feed): (String, String, Option<String>) = (r.get(0)?, r.get(1)?, r.get(2)?);
    Ok(allowed(&partner, feed.as_deref()).then(|| (week, partner, feed.unwrap_or_default())))
}

/// Counts everything in the ledger from the partners (and feeds) `allowed`
/// lets through, in order of week, partner, feed and measure.
pub fn counts(
    conn: &Connection,
    allowed: &dyn Fn(&str, Option<&str>) -> bool,
    disclosure: Disclosure,
) -> Result<Vec<TrendCount>> {
    let mut raw: BTreeMap<Key, u64> = BTreeMap::new();
    let mut add = |week: &str, partner: &str, feed: &str, measure: String, n: u64| {
        *raw.entry((week.into(), partner.into(), feed.into(), measure))
            .or_default() += n;
    };
    let week = "date(received_at, '-6 days', 'weekday 1')";
    let mut stmt = conn.prepare(&format!(
        "SELECT {week}, partner, feed, state, reason, count(*), coalesce(sum(rows_loaded), 0),
                coalesce(sum(records), 0)
         FROM files GROUP BY 1, 2, 3, 4, 5"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let Some((week, partner, feed)) = place(r, allowed)? else {
            continue;
        };
        let (state, reason): (String, Option<String>) = (r.get(3)?, r.get(4)?);
        let (files, rows_loaded, records): (i64, i64, i64) = (r.get(5)?, r.get(6)?, r.get(7)?);
        let (files, rows_loaded, records) = (
            files as u64,
            rows_loaded.max(0) as u64,
            records.max(0) as u64,
        );
        add(&week, &partner, &feed, "files_received".into(), files);
        if state != "received" {
            add(&week, &partner, &feed, format!("files_{state}"), files);
        }
        if state == "quarantined" {
            // Only the fixed reason codes: nothing a sender wrote.
            let reason = reason
                .filter(|r| Reason::ALL.iter().any(|known| known.as_str() == r))
                .unwrap_or_else(|| "other".into());
            add(
                &week,
                &partner,
                &feed,
                format!("quarantined:{reason}"),
                files,
            );
        }
        add(&week, &partner, &feed, "rows_loaded".into(), rows_loaded);
        add(&week, &partner, &feed, "records".into(), records);
    }
    let per_code: Vec<String> = Code::ALL
        .iter()
        .map(|c| format!("count(s.{})", c.name()))
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT date(f.received_at, '-6 days', 'weekday 1'), f.partner, f.feed, {},
                sum(s.news2_score = 0), sum(s.news2_score BETWEEN 1 AND 4),
                sum(s.news2_score BETWEEN 5 AND 6), sum(s.news2_score >= 7)
         FROM observation_sets s JOIN files f ON f.id = s.file_id
         WHERE s.superseded_by IS NULL GROUP BY 1, 2, 3",
        per_code.join(", ")
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let Some((week, partner, feed)) = place(r, allowed)? else {
            continue;
        };
        let mut observations = 0;
        for (i, code) in Code::ALL.iter().enumerate() {
            let n = r.get::<_, i64>(3 + i)?.max(0) as u64;
            observations += n;
            add(
                &week,
                &partner,
                &feed,
                format!("observations:{}", code.name()),
                n,
            );
        }
        add(
            &week,
            &partner,
            &feed,
            "records:observations".into(),
            observations,
        );
        for (i, band) in ["0", "1-4", "5-6", "7+"].iter().enumerate() {
            let n: Option<i64> = r.get(3 + Code::ALL.len() + i)?;
            add(
                &week,
                &partner,
                &feed,
                format!("news2_band:{band}"),
                n.unwrap_or(0).max(0) as u64,
            );
        }
    }
    // Service users (and staff) by the week of the file that last wrote
    // them; the other kinds by the week of the file that wrote them.
    let tables = std::iter::once(("service_users", super::Kind::ServiceUser))
        .chain(super::Kind::described().map(|spec| (spec.table, spec.kind)));
    for (table, kind) in tables {
        let mut stmt = conn.prepare(&format!(
            "SELECT date(f.received_at, '-6 days', 'weekday 1'), f.partner, f.feed, count(*)
             FROM {table} t JOIN files f ON f.id = t.file_id GROUP BY 1, 2, 3"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let Some((week, partner, feed)) = place(r, allowed)? else {
                continue;
            };
            let n: i64 = r.get(3)?;
            add(
                &week,
                &partner,
                &feed,
                format!("records:{kind}"),
                n.max(0) as u64,
            );
        }
    }
    Ok(raw
        .into_iter()
        .map(|((week, partner, feed, measure), n)| TrendCount {
            week,
            partner,
            feed,
            measure,
            count: disclosure.disclose(n),
        })
        .collect())
}
