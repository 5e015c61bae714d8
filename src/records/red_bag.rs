//! Red bags: the transfer pack that goes with a care-home resident to
//! hospital (why, their medicines and allergies, whether a DNACPR decision
//! is in place, how to communicate with them, what they took, whom to call).

use super::care::Spec;
use super::fields::FieldSpec;
use super::{Expect, Kind};

/// The section name in `[feeds.NAME.map]`.
pub const KIND: &str = "red_bag";

/// Resuscitation status: a DNACPR decision in place, for CPR, or not known.
pub const RESUSCITATION: &[&str] = &["dnacpr", "for_cpr", "not_known"];

pub static SPEC: Spec = Spec {
    kind: Kind::RedBag,
    table: "red_bags",
    fields: &[
        FieldSpec::of("transferred_at", Expect::When).required(),
        FieldSpec::text("reason"),
        FieldSpec::text("medications"),
        FieldSpec::text("allergies"),
        FieldSpec::coded("resuscitation", RESUSCITATION),
        FieldSpec::text("communication_needs"),
        FieldSpec::text("belongings"),
        FieldSpec::text("contacts"),
    ],
    columns: &[
        "transferred_at",
        "reason",
        "medications",
        "allergies",
        "resuscitation",
        "communication_needs",
        "belongings",
        "contacts",
    ],
    about_person: true,
};
