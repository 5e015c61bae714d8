//! Staff: the people who write care records, one per (source, staff id),
//! kept up to date by each file that names them.

use super::Kind;
use super::care::Spec;
use super::fields::FieldSpec;

/// The section name in `[feeds.NAME.map]`.
pub const KIND: &str = "staff";

pub static SPEC: Spec = Spec {
    kind: Kind::Staff,
    table: "staff",
    fields: &[
        FieldSpec::text("staff_id").required(),
        FieldSpec::text("name"),
        FieldSpec::text("role"),
        FieldSpec::text("organisation"),
    ],
    columns: &["staff_id", "name", "role", "organisation"],
    about_person: false,
};
