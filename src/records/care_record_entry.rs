//! Care record entries: a note or assessment about a service user, at a
//! time, by an author (a staff id of the same source).

use super::care::Spec;
use super::fields::FieldSpec;
use super::{Expect, Kind};

/// The section name in `[feeds.NAME.map]`.
pub const KIND: &str = "care_record_entry";

pub static SPEC: Spec = Spec {
    kind: Kind::CareRecordEntry,
    table: "care_record_entries",
    fields: &[
        FieldSpec::of("recorded_at", Expect::DateTime).required(),
        FieldSpec::text("author"),
        FieldSpec::text("type"),
        FieldSpec::text("text").required(),
    ],
    columns: &["recorded_at", "author", "entry_type", "text"],
    about_person: true,
};
