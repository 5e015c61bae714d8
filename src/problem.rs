//! What can be wrong with a file: the one list of problem codes, with the
//! stage that finds each and what it means, and the reasons a file is
//! quarantined. The README's tables are checked against these lists.

use std::fmt;

use serde::Serialize;

/// One thing wrong with a file, located as precisely as possible.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// 1-based line where the record starts (0 for the file as a whole).
    pub line: u64,
    /// Column name from the schema, when the problem is in one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// 1-based position of the field in the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<usize>,
    /// Stable, machine-readable problem code.
    pub code: Code,
    /// What is wrong, for a person; never contains an identifier's value.
    pub message: String,
}

impl Problem {
    /// A problem with a whole record or file rather than one field.
    pub fn file(line: u64, code: Code, message: String) -> Problem {
        Problem {
            line,
            column: None,
            field: None,
            code,
            message,
        }
    }
}

/// Declares the codes with their text, stage and meaning in one place.
macro_rules! codes {
    ($( $variant:ident = $text:literal, $stage:literal, $meaning:literal; )*) => {
        /// A stable, machine-readable problem code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $variant, )*
        }

        impl Code {
            /// Every code, in the order the README lists them.
            pub const ALL: &[Code] = &[ $( Code::$variant, )* ];

            /// The code as it is stored in the ledger and written in reports.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $text, )* }
            }

            /// The stage that finds it.
            pub fn stage(self) -> &'static str {
                match self { $( Code::$variant => $stage, )* }
            }

            /// What it means, for the README.
            pub fn meaning(self) -> &'static str {
                match self { $( Code::$variant => $meaning, )* }
            }
        }
    };
}

codes! {
    NoFeed = "no_feed", "land",
        "no feed of the partner matches the file name";
    AmbiguousFeed = "ambiguous_feed", "land",
        "two feeds of the partner match the file name";
    PayloadMissing = "payload_missing", "land",
        "dropgate's own copy of the file is missing from the spool";
    ReadFailed = "read_failed", "decrypt",
        "the file could not be read";
    NotEncrypted = "not_encrypted", "decrypt",
        "the feed requires age encryption and the file is not encrypted";
    WrongKey = "wrong_key", "decrypt",
        "the file is not encrypted to this dropgate's age recipient";
    PassphraseEncrypted = "passphrase_encrypted", "decrypt",
        "the file is encrypted with a passphrase, not to the recipient key";
    InvalidAgeHeader = "invalid_age_header", "decrypt",
        "the age header is malformed or ends early";
    AgeHeaderTooLarge = "age_header_too_large", "decrypt",
        "the age header is over 16 KiB, 64 stanzas or 1 KiB a line";
    InvalidArmor = "invalid_armor", "decrypt",
        "the ASCII armour is damaged, ends early or has an over-long line";
    CiphertextDamaged = "ciphertext_damaged", "decrypt",
        "the age ciphertext is truncated or has been altered";
    EmptyFile = "empty_file", "validate",
        "the file is empty: a header record was expected";
    NoHeader = "no_header", "validate",
        "line 1 names none of the declared columns: the file may lack its header";
    HeaderTooLarge = "header_too_large", "validate",
        "the first record is over `max_record_size`";
    DuplicateColumn = "duplicate_column", "validate",
        "a declared column appears twice in the header";
    UnexpectedColumn = "unexpected_column", "validate",
        "a header field is not a declared column (told by position and shape, never quoted)";
    MissingColumn = "missing_column", "validate",
        "a declared column is not in the header";
    RecordTooLarge = "record_too_large", "validate",
        "a record is over `max_record_size`";
    FieldTooLarge = "field_too_large", "validate",
        "a field is over `max_field_size`";
    UnclosedQuote = "unclosed_quote", "validate",
        "a quoted field is never closed; the line it opened on is given";
    FieldCount = "field_count", "validate",
        "a record has more or fewer fields than the header";
    Encoding = "encoding", "validate",
        "text that is not valid in the feed's encoding";
    Required = "required", "validate",
        "a required field is empty";
    TooLong = "too_long", "validate",
        "a string is longer than `max_length` characters";
    Pattern = "pattern", "validate",
        "a string does not match the column's `pattern`";
    NotInteger = "not_integer", "validate",
        "not a whole number";
    NotDecimal = "not_decimal", "validate",
        "not a decimal number";
    OutOfRange = "out_of_range", "validate",
        "a number outside the column's `min` and `max`";
    NotDate = "not_date", "validate",
        "not a date in the column's format";
    NotDatetime = "not_datetime", "validate",
        "not a date and time in the column's format";
    TooManyDecimals = "too_many_decimals", "validate",
        "more digits after the decimal point than the column's `scale`";
    NotTime = "not_time", "validate",
        "not a time of day in the column's format";
    NotPostcode = "not_postcode", "validate",
        "not a UK postcode";
    NotOdsCode = "not_ods_code", "validate",
        "not an ODS organisation code (3 to 10 letters and digits)";
    NotEmail = "not_email", "validate",
        "not an e-mail address";
    NotPhone = "not_phone", "validate",
        "not a UK telephone number, nor `+` and 8 to 15 digits";
    HeaderRecordMissing = "header_record_missing", "validate",
        "the file does not start with the feed's header record";
    TrailerRecordMissing = "trailer_record_missing", "validate",
        "the file does not end with the feed's trailer record (it may be cut short)";
    TrailerCount = "trailer_count", "validate",
        "the trailer's count of records differs from the data records in the file";
    TrailerTotal = "trailer_total", "validate",
        "the trailer's control total differs from the sum of its column";
    AfterTrailer = "after_trailer", "validate",
        "a record after the trailer record";
    XmlMalformed = "xml_malformed", "validate",
        "the XML is not well-formed, or names a namespace prefix it never declared";
    XmlDtd = "xml_dtd", "validate",
        "the XML declares a document type: DTDs and entities are refused, never expanded";
    XmlEntity = "xml_entity", "validate",
        "an entity reference other than XML's five and character references";
    XmlTooDeep = "xml_too_deep", "validate",
        "elements nested deeper than the feed's `max_depth`";
    XmlTooManyAttributes = "xml_too_many_attributes", "validate",
        "an element with more attributes than the feed's `max_attributes`";
    XmlRepeated = "xml_repeated", "validate",
        "a column's element or attribute appears more than once in one record";
    XmlEncoding = "xml_encoding", "validate",
        "the XML is in an encoding dropgate does not read (it reads UTF-8, Windows-1252 and ISO-8859-1)";
    RequiredWhen = "required_when", "validate",
        "empty, though a rule of the feed requires a value when another column is as it says";
    ForbiddenWhen = "forbidden_when", "validate",
        "a value, though a rule of the feed forbids one when another column is as it says";
    Comparison = "comparison", "validate",
        "two columns of a record fail a rule comparing them (such as end before start)";
    AgeOutOfRange = "age_out_of_range", "validate",
        "an age, from a date of birth to another date of the record, outside a rule's bounds";
    NotUnique = "not_unique", "validate",
        "the values of a `unique` set of columns repeat an earlier record's";
    UniqueTooMany = "unique_too_many", "validate",
        "too many records to check a `unique` set (over 500,000 in one file)";
    NotInCodeList = "not_in_code_list", "validate",
        "not one of the column's `values`";
    NotBoolean = "not_boolean", "validate",
        "neither a true nor a false word of the column";
    NhsNumberFormat = "nhs_number_format", "validate",
        "not ten digits (spaces and hyphens allowed)";
    NhsNumberInvalid = "nhs_number_invalid", "validate",
        "an NHS number that cannot be issued (all zeros)";
    NhsNumberCheckDigit = "nhs_number_check_digit", "validate",
        "the Modulus 11 check digit does not match";
    InternalError = "internal_error", "pipeline",
        "dropgate failed on the file, or processing failed 3 times; the file is kept for replay";
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a file was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    DecryptFailed,
    ValidationFailed,
    NoFeed,
    AmbiguousFeed,
    ReadFailed,
    PayloadMissing,
    InternalError,
}

impl Reason {
    pub const ALL: &[Reason] = &[
        Reason::DecryptFailed,
        Reason::ValidationFailed,
        Reason::NoFeed,
        Reason::AmbiguousFeed,
        Reason::ReadFailed,
        Reason::PayloadMissing,
        Reason::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DecryptFailed => "decrypt_failed",
            Reason::ValidationFailed => "validation_failed",
            Reason::NoFeed => "no_feed",
            Reason::AmbiguousFeed => "ambiguous_feed",
            Reason::ReadFailed => "read_failed",
            Reason::PayloadMissing => "payload_missing",
            Reason::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The README's table of problem codes, as this list says it must read.
pub fn codes_table() -> String {
    let mut table = String::from("| code | stage | meaning |\n|---|---|---|\n");
    for code in Code::ALL {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.stage(),
            code.meaning()
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
    }

    #[test]
    fn the_readme_lists_every_problem_code_as_this_list_says() {
        let readme = include_str!("../README.md");
        let table = codes_table();
        assert!(
            readme.contains(&table),
            "the README's problem-code table must read exactly:\n\n{table}"
        );
        for reason in Reason::ALL {
            assert!(
                readme.contains(&format!("`{reason}`")),
                "the README does not mention reason `{reason}`"
            );
        }
    }
}
