//! Care transactions: an episode of care delivery for a service user (an
//! admission, a visit, a social-care service event...), from a start to an
//! optional end, by a provider.

use super::care::Spec;
use super::fields::FieldSpec;
use super::{Expect, Kind};

/// The section name in `[feeds.NAME.map]`.
pub const KIND: &str = "care_transaction";

/// The transaction types dropgate keeps; a feed translates its own codes to these.
pub const TYPES: &[&str] = &[
    "admission",
    "discharge",
    "transfer",
    "visit",
    "service_event",
    "referral",
    "assessment",
    "review",
];

pub static SPEC: Spec = Spec {
    kind: Kind::CareTransaction,
    table: "care_transactions",
    fields: &[
        FieldSpec::coded("type", TYPES).required(),
        FieldSpec::of("start", Expect::When).required(),
        FieldSpec::of("end", Expect::When),
        FieldSpec::text("provider"),
    ],
    columns: &["transaction_type", "start_at", "end_at", "provider"],
    about_person: true,
};
