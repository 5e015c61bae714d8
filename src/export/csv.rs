//! CSV output: one file per record kind, a header line, then one row per
//! service user (`service_user.csv`), one per observation
//! (`observations.csv`) and one per trend count (`trend.csv`). The columns
//! are listed in the README.

use std::io::{self, Write};

use super::{CountedFile, OutputFile, Target, number};
use crate::records::Exported;
use crate::records::observations::ObservedValue;

const SERVICE_USER_COLUMNS: &str = "detail_id,partner,local_id,nhs_number,family_name,given_name,date_of_birth,gender,postcode,file_id,line";
const TREND_COLUMNS: &str = "week_start,partner,feed,measure,count";
const OBSERVATION_COLUMNS: &str =
    "set_id,detail_id,observed_at,code,value,unit,loinc,snomed,file_id,line";

pub struct Output {
    target: Target,
    service_users: Option<CountedFile>,
    observations: Option<CountedFile>,
    trend: Option<CountedFile>,
}

impl Output {
    pub fn new(target: &Target) -> Output {
        Output {
            target: target.clone(),
            service_users: None,
            observations: None,
            trend: None,
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
        [this.service_users, this.observations, this.trend]
            .into_iter()
            .flatten()
            .map(CountedFile::finish)
            .collect()
    }
}
