//! What commands print for a person: tables, files, people, the banner.

use std::path::Path;
use std::process::ExitCode;

use dropgate::config::Config;
use dropgate::keys;
use dropgate::ledger::{FileRow, FileState, Ledger, Outcome, PersonRecords, PersonView};
use dropgate::records::Kind;
use dropgate::records::care::{self, StoredCare};
use dropgate::text::escaped;

pub(super) fn exit_for(files: &[FileRow]) -> ExitCode {
    if files
        .iter()
        .all(|f| matches!(f.state, FileState::Loaded | FileState::Duplicate))
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(super) fn print_outcome(file: &FileRow) {
    match file.state {
        FileState::Loaded => println!(
            "{}\t{}\tloaded\t{} rows, {} records{}",
            file.id,
            escaped(&file.name),
            file.rows_loaded.unwrap_or(0),
            file.records,
            if file.problems > 0 {
                format!(
                    ", {} problems in skipped rows (dropgate show {})",
                    file.problems, file.id
                )
            } else {
                String::new()
            }
        ),
        FileState::Duplicate => println!(
            "{}\t{}\tduplicate\tsame content as file {}",
            file.id,
            escaped(&file.name),
            file.duplicate_of.unwrap_or(0)
        ),
        FileState::Quarantined => println!(
            "{}\t{}\tquarantined\t{}: {} problem(s); see dropgate show {}",
            file.id,
            escaped(&file.name),
            file.reason.as_deref().unwrap_or("unknown"),
            file.problems,
            file.id
        ),
        FileState::Received => println!("{}\t{}\treceived", file.id, escaped(&file.name)),
    }
}

pub(super) fn print_files(
    rows: &[FileRow],
    forwarded: &std::collections::HashMap<i64, std::collections::BTreeMap<String, u64>>,
) {
    println!(
        "{:>6}  {:<11}  {:<12}  {:<20}  {:>9}  {:>10}  {:<24}  {:<14}  NAME",
        "ID", "STATE", "FEED", "SOURCE", "RECORDS", "SIZE", "RECEIVED", "FORWARDED"
    );
    for f in rows {
        println!(
            "{:>6}  {:<11}  {:<12}  {:<20}  {:>9}  {:>10}  {:<24}  {:<14}  {}{}",
            f.id,
            f.state,
            f.feed.as_deref().unwrap_or("-"),
            f.source,
            f.records,
            f.size,
            f.received_at,
            forwarding(forwarded.get(&f.id)),
            escaped(&f.name),
            f.reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default()
        );
    }
}

/// A file's forwardings in a few words: `-` for none, the state when all
/// its routes are in one, else each state with its count.
fn forwarding(states: Option<&std::collections::BTreeMap<String, u64>>) -> String {
    match states {
        None => "-".to_string(),
        Some(states) if states.len() == 1 && states.values().all(|&n| n == 1) => {
            states.keys().next().expect("one").clone()
        }
        Some(states) => states
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

pub(super) fn show(ledger: &Ledger, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let file = ledger.file(id)?;
    let events = ledger.events(id)?;
    let problems = ledger.problems(id)?;
    let routed = ledger.route_deliveries(id)?;
    if json {
        let value = serde_json::json!({
            "file": file, "events": events, "problems": problems, "routes": routed,
        });
        println!("{}", serde_json::to_string(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("file {}  {}", file.id, escaped(&file.name));
    println!(
        "  state     {}{}",
        file.state,
        file.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!("  source    {} (partner {})", file.source, file.partner);
    println!("  feed      {}", file.feed.as_deref().unwrap_or("-"));
    println!("  sha256    {}", file.sha256);
    println!("  size      {} bytes", file.size);
    if let Some(rows) = file.rows_read {
        println!(
            "  rows      {} read, {} loaded; {} records",
            rows,
            file.rows_loaded.unwrap_or(0),
            file.records
        );
    }
    if let Some(of) = file.duplicate_of {
        println!("  duplicate of file {of}");
    }
    println!("events:");
    for e in &events {
        println!(
            "  {}  {:<20} {}",
            e.at,
            e.event,
            escaped(&e.detail.as_ref().map(|d| d.to_string()).unwrap_or_default())
        );
    }
    if !routed.is_empty() {
        println!("forwarded:");
        for r in &routed {
            println!(
                "  {:<20} to {:<16} {} after {} attempt(s){}{}",
                r.route,
                r.destination,
                r.state,
                r.attempts,
                r.grant
                    .as_deref()
                    .map(|g| format!(", grant {g}"))
                    .unwrap_or_default(),
                r.error
                    .as_deref()
                    .map(|e| format!(": {}", escaped(e)))
                    .unwrap_or_default()
            );
        }
    }
    if !problems.is_empty() {
        println!(
            "problems ({} found, {} listed):",
            file.problems,
            problems.len()
        );
        for p in &problems {
            print_problem(
                p.line,
                p.column.as_deref(),
                p.field.map(|f| f as usize),
                &p.message,
                &p.code,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One problem on one line: where, what, and its code.
fn print_problem(line: u64, column: Option<&str>, field: Option<usize>, message: &str, code: &str) {
    let place = match (column, field) {
        (Some(c), Some(f)) => format!("line {line}, column `{c}` (field {f})"),
        (Some(c), None) => format!("line {line}, column `{c}`"),
        (None, Some(f)) => format!("line {line}, field {f}"),
        (None, None) if line == 0 => "file".to_string(),
        (None, None) => format!("line {line}"),
    };
    println!("  {}: {} [{code}]", escaped(&place), escaped(message));
}

/// What `schema check` found in a sample.
pub(super) fn sample(path: &Path, outcome: &Outcome, json: bool) -> anyhow::Result<()> {
    if json {
        let value = serde_json::json!({
            "file": path.display().to_string(),
            "would_be": outcome.state,
            "reason": outcome.reason,
            "rows_read": outcome.rows_read,
            "rows_valid": outcome.rows_loaded,
            "problem_count": outcome.problem_count,
            "problems": outcome.problems,
        });
        println!("{}", serde_json::to_string(&value)?);
        return Ok(());
    }
    let verdict = match (&outcome.state, &outcome.reason) {
        (FileState::Loaded, _) => "would be loaded".to_string(),
        (state, Some(reason)) => format!("would be {state} ({reason})"),
        (state, None) => format!("would be {state}"),
    };
    println!("{}: {verdict}", escaped(&path.display().to_string()));
    if let Some(read) = outcome.rows_read {
        println!(
            "  rows      {read} read, {} valid",
            outcome.rows_loaded.unwrap_or(0)
        );
    }
    if !outcome.problems.is_empty() {
        println!(
            "problems ({} found, {} listed):",
            outcome.problem_count,
            outcome.problems.len()
        );
        for p in &outcome.problems {
            print_problem(
                p.line,
                p.column.as_deref(),
                p.field,
                &p.message,
                p.code.as_str(),
            );
        }
    }
    Ok(())
}

pub(super) fn print_person(person: &PersonView) {
    match &person.nhs_number {
        Some(n) => println!("person {}  NHS number {}", person.person_id, n),
        None => println!("person {}  (no NHS number)", person.person_id),
    }
    for d in &person.details {
        println!(
            "  detail {:>6}  {}:{}  observations {}  care records {}  transactions {}  red bags {}  alerts {}",
            d.detail_id,
            d.source,
            escaped(&d.local_id),
            d.observations,
            d.care_record_entries,
            d.care_transactions,
            d.red_bags,
            d.alerts
        );
    }
}

/// The person's records of the described kinds, kind by kind, each detail's in turn.
pub(super) fn care_records_of(
    conn: &rusqlite::Connection,
    records: &PersonRecords,
) -> anyhow::Result<Vec<StoredCare>> {
    let mut found = Vec::new();
    for spec in Kind::described().filter(|s| s.about_person) {
        for d in &records.details {
            found.extend(care::about_detail(conn, spec, d.detail_id)?);
        }
    }
    Ok(found)
}

/// `patients show --json`: the person's records, then those of the other kinds.
#[derive(serde::Serialize)]
pub(super) struct ShownPerson<'a> {
    #[serde(flatten)]
    pub records: &'a PersonRecords,
    pub care_records: Vec<CareView<'a>>,
}

#[derive(serde::Serialize)]
pub(super) struct CareView<'a> {
    kind: &'static str,
    id: i64,
    /// Its first version's id: the same for every version of the record.
    record_id: i64,
    /// The version that replaced this one.
    superseded_by: Option<i64>,
    detail_id: Option<i64>,
    partner: &'a str,
    fields: std::collections::BTreeMap<&'static str, &'a str>,
    file_id: i64,
    line: u64,
}

impl<'a> From<&'a StoredCare> for CareView<'a> {
    fn from(r: &'a StoredCare) -> CareView<'a> {
        let spec = r.kind.spec().expect("a described kind");
        CareView {
            kind: r.kind.name(),
            id: r.id,
            record_id: r.record_id,
            superseded_by: r.superseded_by,
            detail_id: r.detail_id,
            partner: &r.partner,
            fields: spec
                .fields
                .iter()
                .zip(&r.values)
                .filter_map(|(f, v)| Some((f.key, v.as_deref()?)))
                .collect(),
            file_id: r.file_id,
            line: r.line,
        }
    }
}

pub(super) fn print_person_records(records: &PersonRecords, care: &[StoredCare]) {
    print_person(&records.person);
    let or_dash = |v: &Option<String>| escaped(v.as_deref().unwrap_or("-")).into_owned();
    for d in &records.details {
        println!(
            "  detail {:>6}  {} {}, born {}, gender {}, postcode {}  (file {}, line {})",
            d.detail_id,
            or_dash(&d.given_name),
            or_dash(&d.family_name),
            or_dash(&d.date_of_birth),
            or_dash(&d.gender),
            or_dash(&d.postcode),
            d.file_id,
            d.line
        );
    }
    // Earlier states of a detail, when files gave more than one.
    for d in &records.details {
        let versions: Vec<_> = records
            .detail_versions
            .iter()
            .filter(|v| v.detail_id == d.detail_id)
            .collect();
        if versions.len() < 2 {
            continue;
        }
        println!("  versions of detail {}:", d.detail_id);
        for v in versions {
            println!(
                "    {} {}, born {}, gender {}, postcode {}, as of {}  (file {}, line {})",
                or_dash(&v.given_name),
                or_dash(&v.family_name),
                or_dash(&v.date_of_birth),
                or_dash(&v.gender),
                or_dash(&v.postcode),
                or_dash(&v.updated_at),
                v.file_id,
                v.line
            );
        }
    }
    println!(
        "observations ({} in all, the newest {} listed):",
        records.observations_total,
        records.observations.len()
    );
    for o in &records.observations {
        let replaced = match o.superseded_by {
            Some(by) => format!("  [replaced by set {by}]"),
            None => String::new(),
        };
        println!(
            "  {}  detail {:>6}  set {}  {:<20} {} {}  (file {}, line {}){replaced}",
            o.observed_at,
            o.detail_id,
            o.set_id,
            o.code,
            escaped(&o.value),
            o.unit.as_deref().unwrap_or(""),
            o.file_id,
            o.line
        );
    }
    let mut kind = None;
    for r in care {
        if kind != Some(r.kind) {
            println!("{}:", r.kind);
            kind = Some(r.kind);
        }
        let view = CareView::from(r);
        let fields: Vec<String> = view
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={}", escaped(v)))
            .collect();
        let replaced = match r.superseded_by {
            Some(by) => format!("  [replaced by {by}]"),
            None => String::new(),
        };
        println!(
            "  detail {:>6}  #{}  {}  (file {}, line {}){replaced}",
            r.detail_id.unwrap_or_default(),
            r.id,
            fields.join("  "),
            r.file_id,
            r.line
        );
    }
}

pub(super) fn print_banner(config: &Config) -> anyhow::Result<()> {
    for key in keys::ensure(config, false)? {
        if key.created {
            println!("created {} {}", key.what, key.path.display());
        }
    }
    let identity = keys::load_identity(&config.keys.age_identity)?;
    println!("dropgate {}", env!("CARGO_PKG_VERSION"));
    println!("  config         {}", config.file.display());
    println!("  ledger         {}", config.daemon.ledger.display());
    println!("  age recipient  {}", identity.to_public());
    for source in config.sources.values() {
        match &source.kind {
            dropgate::config::SourceKind::Local(local) => println!(
                "  drop folder    {}  (source {}, partner {})",
                local.path.display(),
                source.name,
                source.partner
            ),
            dropgate::config::SourceKind::Remote(remote) => println!(
                "  polls          {}  {}  (source {}, partner {})",
                remote.endpoint, remote.schedule, source.name, source.partner
            ),
        }
    }
    if let Some(sftp) = &config.sftp_server {
        for (name, partner) in &config.partners {
            if let Some(account) = &partner.sftp {
                let key = account
                    .demo_key
                    .as_ref()
                    .map(|k| format!("-i {} ", k.display()))
                    .unwrap_or_default();
                // Partners that send files, and consumers that only fetch exports.
                let sends = config.feeds.values().any(|f| &f.partner == name);
                let (what, then) = match (sends, account.outbox) {
                    (true, _) | (false, false) => ("SFTP drop ", "then: put FILE inbox/"),
                    (false, true) => ("SFTP fetch", "then: get -r outbox/"),
                };
                println!(
                    "  {what}     sftp {key}-P {} {name}@{}   {then}",
                    sftp.listen.port(),
                    sftp.listen.ip()
                );
            }
        }
    }
    for schedule in config.schedules.values() {
        println!(
            "  export         {} for {}: {} (now: dropgate export {})",
            schedule.name,
            schedule.consumer,
            dropgate::schedule::Schedule::Cron(Box::new(schedule.cron.clone())),
            schedule.name
        );
    }
    println!(
        "Encrypt with:   age -r {} -o news2_x.csv.age news2_x.csv",
        identity.to_public()
    );
    Ok(())
}
