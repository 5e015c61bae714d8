//! Facts of the care domain that the pipeline relies on.

pub mod contact;
pub mod news2;
pub mod nhs_number;
