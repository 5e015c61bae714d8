use super::*;
use crate::schema::{CodeList, DateTimeFormat};

fn column(name: &str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec::optional(name, kind)
}

fn one(kind: ColumnKind, value: &str) -> Result<Value, (&'static str, String)> {
    check_value(&column("c", kind), value).map_err(|(code, message)| (code.as_str(), message))
}

#[test]
fn strings_check_length_in_characters_and_pattern() {
    let kind = || ColumnKind::String {
        max_length: Some(3),
        pattern: Some(regex::Regex::new("^(?:[A-Zé]+)$").unwrap()),
    };
    assert_eq!(one(kind(), "ABé"), Ok(Value::Text("ABé".into())));
    assert_eq!(one(kind(), "ABCD").unwrap_err().0, "too_long");
    let (code, message) = one(kind(), "ab").unwrap_err();
    assert_eq!(code, "pattern");
    assert!(message.contains("`ab`"), "{message}");
}

#[test]
fn integers_and_decimals_check_range() {
    let int = || ColumnKind::Integer {
        min: Some(0.0),
        max: Some(80.0),
    };
    assert_eq!(one(int(), " 18 "), Ok(Value::Integer(18)));
    assert_eq!(one(int(), "81").unwrap_err().0, "out_of_range");
    assert_eq!(one(int(), "-1").unwrap_err().0, "out_of_range");
    assert_eq!(one(int(), "18.5").unwrap_err().0, "not_integer");
    let dec = || ColumnKind::Decimal {
        min: Some(25.0),
        max: Some(45.0),
        scale: None,
    };
    assert_eq!(one(dec(), "36.6"), Ok(Value::Decimal(36.6)));
    assert_eq!(one(dec(), "45.1").unwrap_err().0, "out_of_range");
    for bad in ["NaN", "inf", "3e1", "36,6", "abc"] {
        assert_eq!(one(dec(), bad).unwrap_err().0, "not_decimal", "{bad}");
    }
}

#[test]
fn dates_and_datetimes_follow_their_format() {
    let date = |f: &str| ColumnKind::Date { format: f.into() };
    assert!(one(date("%Y-%m-%d"), "2026-02-28").is_ok());
    assert_eq!(
        one(date("%Y-%m-%d"), "2026-02-30").unwrap_err().0,
        "not_date"
    );
    assert!(one(date("%d/%m/%Y"), "28/02/2026").is_ok());
    assert!(one(date("%Y%m%d"), "20260228").is_ok());
    let iso = || ColumnKind::DateTime {
        format: DateTimeFormat::Iso8601,
    };
    assert!(one(iso(), "2026-11-22T08:00:00Z").is_ok());
    assert!(one(iso(), "2026-11-22T08:00:00+01:00").is_ok());
    assert_eq!(
        one(iso(), "2026-11-22T08:00:00").unwrap_err().0,
        "not_datetime",
        "an offset is required"
    );
    let compact = ColumnKind::DateTime {
        format: DateTimeFormat::Chrono("%Y%m%d%H%M%S".into()),
    };
    assert!(one(compact, "20261122080000").is_ok());
}

#[test]
fn code_lists_are_case_sensitive_unless_told_otherwise() {
    // Short lists are searched in order, long ones through their index:
    // both answer the same, the first declared of codes differing in case.
    let long: Vec<String> = (0..100).map(|i| format!("X{i}")).collect();
    for extra in [Vec::new(), long] {
        let code = |ignore_case| {
            let mut codes = vec!["A".to_string(), "V".into(), "v".into()];
            codes.extend(extra.iter().cloned());
            ColumnKind::Code {
                values: CodeList::new(codes, ignore_case),
            }
        };
        assert!(one(code(false), "A").is_ok());
        assert_eq!(one(code(false), "a").unwrap_err().0, "not_in_code_list");
        assert_eq!(one(code(false), "v"), Ok(Value::Text("v".into())));
        assert_eq!(one(code(true), "a"), Ok(Value::Text("A".into())));
        assert_eq!(one(code(true), "v"), Ok(Value::Text("V".into())));
        let x7 = one(code(true), "x7");
        if extra.is_empty() {
            assert_eq!(x7.unwrap_err().0, "not_in_code_list");
        } else {
            assert_eq!(x7, Ok(Value::Text("X7".into())));
        }
    }
}

#[test]
fn booleans_use_configured_words() {
    let kind = || ColumnKind::Boolean {
        true_values: vec!["Y".into()],
        false_values: vec!["N".into()],
    };
    assert_eq!(one(kind(), "Y"), Ok(Value::Bool(true)));
    assert_eq!(one(kind(), "N"), Ok(Value::Bool(false)));
    assert_eq!(one(kind(), "yes").unwrap_err().0, "not_boolean");
}

#[test]
fn nhs_numbers_are_checked_and_never_echoed() {
    assert!(matches!(
        one(ColumnKind::NhsNumber, "943 476 5919"),
        Ok(Value::Nhs(_))
    ));
    let (code, message) = one(ColumnKind::NhsNumber, "9434765918").unwrap_err();
    assert_eq!(code, "nhs_number_check_digit");
    assert!(!message.contains("943"), "{message}");
    assert_eq!(
        one(ColumnKind::NhsNumber, "94347659").unwrap_err().0,
        "nhs_number_format"
    );
}

#[test]
fn identifier_values_never_appear_in_messages() {
    let mut c = column(
        "family_name",
        ColumnKind::String {
            max_length: None,
            pattern: Some(regex::Regex::new("^(?:[A-Z]+)$").unwrap()),
        },
    );
    c.identifier = true;
    let (_, message) = check_value(&c, "smith").unwrap_err();
    assert!(!message.contains("smith"), "{message}");
}

#[test]
fn required_and_optional_empties() {
    let mut c = column(
        "x",
        ColumnKind::Integer {
            min: None,
            max: None,
        },
    );
    assert_eq!(check_value(&c, "  "), Ok(Value::Empty));
    c.required = true;
    assert_eq!(check_value(&c, "").unwrap_err().0, "required");
}

#[test]
fn quoted_values_are_short_and_escaped() {
    let kind = || ColumnKind::Code {
        values: CodeList::new((0..40).map(|n| n.to_string()).collect(), false),
    };
    let (code, message) = one(kind(), &format!("x\u{202E}y\n{}", "w".repeat(500))).unwrap_err();
    assert_eq!(code, "not_in_code_list");
    assert!(message.contains("x\\u{202e}y\\nwww"), "{message}");
    assert!(message.contains("and 28 more"), "{message}");
    assert!(message.len() < 160, "{message}");
}

#[test]
fn a_decimal_scale_limits_the_digits_after_the_point() {
    let money = || ColumnKind::Decimal {
        min: None,
        max: None,
        scale: Some(2),
    };
    assert_eq!(one(money(), "12.50"), Ok(Value::Decimal(12.5)));
    assert_eq!(one(money(), "-3"), Ok(Value::Decimal(-3.0)));
    let (code, message) = one(money(), "12.505").unwrap_err();
    assert_eq!(code, "too_many_decimals");
    assert!(
        message.contains("3 digits") && message.contains("at most 2"),
        "{message}"
    );
}

#[test]
fn times_of_day_are_stored_with_seconds() {
    let any = || ColumnKind::Time { format: None };
    assert_eq!(one(any(), "09:05"), Ok(Value::Text("09:05:00".into())));
    assert_eq!(one(any(), "23:59:30"), Ok(Value::Text("23:59:30".into())));
    assert_eq!(one(any(), "24:00").unwrap_err().0, "not_time");
    let compact = ColumnKind::Time {
        format: Some("%H%M".into()),
    };
    assert_eq!(one(compact, "0905"), Ok(Value::Text("09:05:00".into())));
}

#[test]
fn postcodes_email_and_phone_numbers_are_normalised_and_never_echoed() {
    assert_eq!(
        one(ColumnKind::Postcode, "sw1a1aa"),
        Ok(Value::Text("SW1A 1AA".into()))
    );
    assert_eq!(
        one(ColumnKind::OdsCode, "a81001"),
        Ok(Value::Text("A81001".into()))
    );
    assert_eq!(
        one(ColumnKind::Email, "Ward.7@Example.NHS.UK"),
        Ok(Value::Text("Ward.7@example.nhs.uk".into()))
    );
    assert_eq!(
        one(ColumnKind::Phone, "+44 (0)1632 960001"),
        Ok(Value::Text("01632960001".into()))
    );
    for (kind, bad, code) in [
        (ColumnKind::Postcode, "ZZ99 9ZZZ", "not_postcode"),
        (ColumnKind::Email, "someone-at-example.org", "not_email"),
        (ColumnKind::Phone, "01632 96000X", "not_phone"),
        (ColumnKind::OdsCode, "A8-1001", "not_ods_code"),
    ] {
        let (found, message) = one(kind, bad).unwrap_err();
        assert_eq!(found, code, "{bad}");
        if code != "not_ods_code" {
            assert!(!message.contains(bad), "{message}");
        }
    }
}

proptest::proptest! {
    /// Any date written in a column's format reads back as that date.
    #[test]
    fn dates_round_trip_through_their_format(
        days in 0i32..(200 * 366),
        format in proptest::sample::select(vec!["%Y-%m-%d", "%d/%m/%Y", "%Y%m%d", "%d-%b-%Y"]),
    ) {
        let date = chrono::NaiveDate::from_ymd_opt(1900, 1, 1).unwrap()
            + chrono::Duration::days(i64::from(days));
        let text = date.format(format).to_string();
        let kind = ColumnKind::Date { format: format.into() };
        proptest::prop_assert_eq!(one(kind, &text), Ok(Value::Date(date)));
    }

    /// The hand-read date formats answer as chrono does, for any digits in
    /// their shape (impossible dates included) and anything else.
    #[test]
    fn dates_read_by_hand_agree_with_chrono(
        value in "[0-9]{2}/[0-9]{2}/[0-9]{4}|[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9/ -]{0,11}",
        format in proptest::sample::select(vec!["%Y-%m-%d", "%d/%m/%Y", "%Y%m%d"]),
    ) {
        proptest::prop_assert_eq!(
            super::parse_date(&value, format),
            chrono::NaiveDate::parse_from_str(&value, format).ok()
        );
    }

    /// Compact timestamps (`CCYYMMDDHHMMSS`) read back as that instant.
    #[test]
    fn compact_timestamps_round_trip(seconds in 0i64..4_000_000_000) {
        let at = chrono::DateTime::from_timestamp(seconds, 0).unwrap();
        let text = at.format("%Y%m%d%H%M%S").to_string();
        let kind = ColumnKind::DateTime {
            format: DateTimeFormat::Chrono("%Y%m%d%H%M%S".into()),
        };
        proptest::prop_assert_eq!(one(kind, &text), Ok(Value::DateTime(at.fixed_offset())));
    }
}

#[test]
fn white_space_around_a_value_is_not_part_of_it_whatever_kind_it_is() {
    let int = || ColumnKind::Integer {
        min: None,
        max: None,
    };
    for padded in [
        "42",
        " 42",
        "42 ",
        "\t42\r",
        "\u{a0}42",
        "42\u{a0}",
        "\u{2003}42\u{3000}",
    ] {
        assert_eq!(one(int(), padded), Ok(Value::Integer(42)), "{padded:?}");
    }
    assert_eq!(one(int(), "4 2").unwrap_err().0, "not_integer");
    assert_eq!(one(int(), "\u{a0}"), Ok(Value::Empty));
}
