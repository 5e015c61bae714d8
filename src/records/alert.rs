//! Alerts: something everyone caring for a service user must know (an
//! allergy, a safeguarding concern, a risk), with a severity and the
//! period it applies.

use super::care::Spec;
use super::fields::FieldSpec;
use super::{Expect, Kind};

/// The section name in `[feeds.NAME.map]`.
pub const KIND: &str = "alert";

pub const TYPES: &[&str] = &["allergy", "safeguarding", "risk", "clinical", "other"];
pub const SEVERITIES: &[&str] = &["low", "medium", "high"];

pub static SPEC: Spec = Spec {
    kind: Kind::Alert,
    table: "alerts",
    fields: &[
        FieldSpec::coded("type", TYPES).required(),
        FieldSpec::coded("severity", SEVERITIES),
        FieldSpec::text("description"),
        FieldSpec::of("start", Expect::When),
        FieldSpec::of("end", Expect::When),
    ],
    columns: &[
        "alert_type",
        "severity",
        "description",
        "start_at",
        "end_at",
    ],
    about_person: true,
};
