//! Trend: what arrived each week, per partner and feed, as counts with no
//! identifiers: files by outcome (and quarantines by reason), rows and
//! records loaded (in all and by kind), observations by code and NEWS2 totals
//! by band. Weeks start on Monday and are those in which the files were
//! received (UTC).
//!
//! Small numbers are hidden before a count leaves: see [`Disclosure`].

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

/// Counts by (week, partner, feed, measure), before disclosure.
type Counts = crate::ledger::Counts;

fn add(raw: &mut Counts, week: &str, partner: &str, feed: &str, measure: String, n: u64) {
    *raw.entry((week.into(), partner.into(), feed.into(), measure))
        .or_default() += n;
}

/// A grouped row's week, partner and feed (its first three columns; the
/// feed empty when the file matched none).
fn place(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String)> {
    let (week, partner, feed): (String, String, Option<String>) = (r.get(0)?, r.get(1)?, r.get(2)?);
    Ok((week, partner, feed.unwrap_or_default()))
}

/// Counts everything in the ledger from the partners (and feeds) `allowed`
/// lets through, in order of week, partner, feed and measure: what the
/// files and records say, plus what was kept of records retention deleted.
pub fn counts(
    conn: &Connection,
    allowed: &dyn Fn(&str, Option<&str>) -> bool,
    disclosure: Disclosure,
) -> Result<Vec<TrendCount>> {
    let mut raw = file_counts(conn)?;
    for (key, n) in record_counts(conn, "1")? {
        *raw.entry(key).or_default() += n;
    }
    let mut stmt = conn.prepare("SELECT week, partner, feed, measure, count FROM kept_counts")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(4)?;
        *raw.entry((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            .or_default() += n.max(0) as u64;
    }
    Ok(raw
        .into_iter()
        .filter(|((_, partner, feed, _), _)| {
            allowed(partner, (!feed.is_empty()).then_some(feed.as_str()))
        })
        .map(|((week, partner, feed, measure), n)| TrendCount {
            week,
            partner,
            feed,
            measure,
            count: disclosure.disclose(n),
        })
        .collect())
}

/// Files by outcome and quarantines by reason, rows and records loaded: kept
/// for every file whatever retention deletes.
fn file_counts(conn: &Connection) -> Result<Counts> {
    let mut raw = Counts::new();
    let week = "date(received_at, '-6 days', 'weekday 1')";
    let mut stmt = conn.prepare(&format!(
        "SELECT {week}, partner, feed, state, reason, count(*), coalesce(sum(rows_loaded), 0),
                coalesce(sum(records), 0)
         FROM files GROUP BY 1, 2, 3, 4, 5"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (week, partner, feed) = place(r)?;
        let (state, reason): (String, Option<String>) = (r.get(3)?, r.get(4)?);
        let (files, rows_loaded, records): (i64, i64, i64) = (r.get(5)?, r.get(6)?, r.get(7)?);
        let (files, rows_loaded, records) = (
            files as u64,
            rows_loaded.max(0) as u64,
            records.max(0) as u64,
        );
        let mut add = |measure: String, n: u64| add(&mut raw, &week, &partner, &feed, measure, n);
        add("files_received".into(), files);
        if state != "received" {
            add(format!("files_{state}"), files);
        }
        if state == "quarantined" {
            // Only the fixed reason codes: nothing a sender wrote.
            let reason = reason
                .filter(|r| Reason::ALL.iter().any(|known| known.as_str() == r))
                .unwrap_or_else(|| "other".into());
            add(format!("quarantined:{reason}"), files);
        }
        add("rows_loaded".into(), rows_loaded);
        add("records".into(), records);
    }
    Ok(raw)
}

/// The measures the record tables give (observations by code, NEWS2 bands,
/// records by kind), of the files `scope` (a condition on the files table
/// as `f`) selects. Retention counts these before and after it deletes.
pub fn record_counts(conn: &Connection, scope: &str) -> Result<Counts> {
    let mut raw = Counts::new();
    let per_code: Vec<String> = Code::ALL
        .iter()
        .map(|c| format!("count(s.{})", c.name()))
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT date(f.received_at, '-6 days', 'weekday 1'), f.partner, f.feed, {},
                sum(s.news2_score = 0), sum(s.news2_score BETWEEN 1 AND 4),
                sum(s.news2_score BETWEEN 5 AND 6), sum(s.news2_score >= 7)
         FROM observation_sets s JOIN files f ON f.id = s.file_id
         WHERE s.superseded_by IS NULL AND {scope} GROUP BY 1, 2, 3",
        per_code.join(", ")
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (week, partner, feed) = place(r)?;
        let mut add = |measure: String, n: u64| add(&mut raw, &week, &partner, &feed, measure, n);
        let mut observations = 0;
        for (i, code) in Code::ALL.iter().enumerate() {
            let n = r.get::<_, i64>(3 + i)?.max(0) as u64;
            observations += n;
            add(format!("observations:{}", code.name()), n);
        }
        add("records:observations".into(), observations);
        for (i, band) in ["0", "1-4", "5-6", "7+"].iter().enumerate() {
            let n: Option<i64> = r.get(3 + Code::ALL.len() + i)?;
            add(format!("news2_band:{band}"), n.unwrap_or(0).max(0) as u64);
        }
    }
    // Service users (and staff) by the week of the file that last wrote
    // them; the other kinds by the week of the file that wrote them.
    let tables = std::iter::once(("service_users", super::Kind::ServiceUser))
        .chain(super::Kind::described().map(|spec| (spec.table, spec.kind)));
    for (table, kind) in tables {
        let mut stmt = conn.prepare(&format!(
            "SELECT date(f.received_at, '-6 days', 'weekday 1'), f.partner, f.feed, count(*)
             FROM {table} t JOIN files f ON f.id = t.file_id WHERE {scope} GROUP BY 1, 2, 3"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (week, partner, feed) = place(r)?;
            let n: i64 = r.get(3)?;
            add(
                &mut raw,
                &week,
                &partner,
                &feed,
                format!("records:{kind}"),
                n.max(0) as u64,
            );
        }
    }
    Ok(raw)
}
