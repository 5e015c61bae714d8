//! CSV output: one file per record kind, a header line, then one row per
//! service user (`service_user.csv`), one per observation
//! (`observations.csv`), one per trend count (`trend.csv`), and one per
//! record of each other kind (`KIND.csv`: its id, the id of its first
//! version, its service user's detail id, the partner, its fields in the
//! config's order, file and line). The
//! columns are listed in the README.

use std::io::{self, Write};

use super::{CountedFile, OutputFile, Target, number};
use crate::records::care::StoredCare;
use crate::records::observations::ObservedValue;
use crate::records::{Exported, Kind};

const SERVICE_USER_COLUMNS: &str = "detail_id,partner,local_id,nhs_number,family_name,given_name,date_of_birth,gender,postcode,file_id,line";
const TREND_COLUMNS: &str = "week_start,partner,feed,measure,count";
const OBSERVATION_COLUMNS: &str =
    "set_id,record_id,detail_id,observed_at,code,value,unit,loinc,snomed,file_id,line";

pub struct Output {
    target: Target,
    service_users: Option<CountedFile>,
    observations: Option<CountedFile>,
    trend: Option<CountedFile>,
    /// By kind, in `Kind` order.
    care: std::collections::BTreeMap<Kind, CountedFile>,
}

impl Output {
    pub fn new(target: &Target) -> Output {
        Output {
            target: target.clone(),
            service_users: None,
            observations: None,
            trend: None,
            care: Default::default(),
        }
    }
}

/// Opens the file on its first row, writing its header.
fn opened<'f>(
    slot: &'f mut Option<CountedFile>,
    target: &Target,
    name: &str,
    header: &str,
) -> io::Result<&'f mut CountedFile> {
    if slot.is_none() {
        let kind = name.trim_end_matches(".csv");
        let mut file = CountedFile::create(target, name, kind)?;
        writeln!(file.writer(), "{header}")?;
        *slot = Some(file);
    }
    Ok(slot.as_mut().expect("opened above"))
}

/// A field, quoted when it holds a delimiter, a quote or a line break.
fn field(out: &mut impl Write, value: &str) -> io::Result<()> {
    if value.contains([',', '"', '\n', '\r']) {
        write!(out, "\"{}\"", value.replace('"', "\"\""))
    } else {
        out.write_all(value.as_bytes())
    }
}

fn row(out: &mut impl Write, fields: &[&str]) -> io::Result<()> {
    for (i, value) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        field(out, value)?;
    }
    out.write_all(b"\n")
}

impl Output {
    fn care(&mut self, record: &StoredCare) -> io::Result<()> {
        let spec = record.kind.spec().expect("a described kind");
        if !self.care.contains_key(&record.kind) {
            let mut header = vec!["id"];
            if spec.about_person {
                header.extend(["record_id", "detail_id"]);
            }
            header.push("partner");
            header.extend(spec.fields.iter().map(|f| f.key));
            header.extend(["file_id", "line"]);
            let mut slot = None;
            opened(
                &mut slot,
                &self.target,
                &format!("{}.csv", record.kind),
                &header.join(","),
            )?;
            self.care.insert(record.kind, slot.expect("opened"));
        }
        let file = self.care.get_mut(&record.kind).expect("opened above");
        let id = record.id.to_string();
        let detail_id = record.detail_id.map(|d| d.to_string());
        let (file_id, line) = (record.file_id.to_string(), record.line.to_string());
        let record_id = record.record_id.to_string();
        let mut fields: Vec<&str> = vec![&id];
        if let Some(detail_id) = &detail_id {
            fields.extend([record_id.as_str(), detail_id]);
        }
        fields.push(&record.partner);
        fields.extend(record.values.iter().map(|v| v.as_deref().unwrap_or("")));
        fields.extend([file_id.as_str(), line.as_str()]);
        row(file.next(), &fields)
    }
}

impl super::Output for Output {
    fn write(&mut self, record: &Exported<'_>) -> io::Result<()> {
        match record {
            Exported::ServiceUser(user) => {
                let u = &user.detail;
                let file = opened(
                    &mut self.service_users,
                    &self.target,
                    "service_user.csv",
                    SERVICE_USER_COLUMNS,
                )?;
                let text = |v: &Option<String>| v.clone().unwrap_or_default();
                row(
                    file.next(),
                    &[
                        &u.detail_id.to_string(),
                        &u.source,
                        &u.local_id,
                        &text(&u.nhs_number),
                        &text(&u.family_name),
                        &text(&u.given_name),
                        &text(&u.date_of_birth),
                        &text(&u.gender),
                        &text(&u.postcode),
                        &u.file_id.to_string(),
                        &u.line.to_string(),
                    ],
                )
            }
            Exported::ObservationSet(set) => {
                let file = opened(
                    &mut self.observations,
                    &self.target,
                    "observations.csv",
                    OBSERVATION_COLUMNS,
                )?;
                let (set_id, detail_id) = (set.set_id.to_string(), set.detail_id.to_string());
                let record_id = set.record_id.to_string();
                let (file_id, line) = (set.file_id.to_string(), set.line.to_string());
                for o in &set.observations {
                    let value = match &o.value {
                        ObservedValue::Number(n) => number(*n),
                        ObservedValue::Text(t) => t.clone(),
                    };
                    row(
                        file.next(),
                        &[
                            &set_id,
                            &record_id,
                            &detail_id,
                            &set.observed_at,
                            o.code.name(),
                            &value,
                            o.code.unit().unwrap_or(""),
                            o.code.loinc().unwrap_or(""),
                            o.code.snomed().unwrap_or(""),
                            &file_id,
                            &line,
                        ],
                    )?;
                }
                Ok(())
            }
            Exported::Care(record) => self.care(record),
            Exported::Trend(t) => {
                let file = opened(&mut self.trend, &self.target, "trend.csv", TREND_COLUMNS)?;
                let count = t
                    .count
                    .map_or_else(|| "suppressed".to_string(), |n| n.to_string());
                row(
                    file.next(),
                    &[&t.week, &t.partner, &t.feed, &t.measure, &count],
                )
            }
        }
    }

    fn finish(self: Box<Self>) -> io::Result<Vec<OutputFile>> {
        let this = *self;
        [this.service_users, this.observations]
            .into_iter()
            .flatten()
            .chain(this.care.into_values())
            .chain(this.trend)
            .map(CountedFile::finish)
            .collect()
    }
}
