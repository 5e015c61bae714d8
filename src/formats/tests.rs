//! Files read through their layout and checked: records, lines, headers,
//! encodings and the caps, end to end.

use super::*;
use crate::schema::{CodeList, FixedLayout};
use crate::schema::{
    ColumnKind, ColumnSpec, Comparison, Condition, CsvLayout, ExtraColumns, HeaderRecord,
    MissingColumns, NameMatch, Rule, Test, TrailerRecord,
};
use crate::validate::{Row, Value};

fn column(name: &str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec::optional(name, kind)
}

fn schema(columns: Vec<ColumnSpec>) -> Schema {
    Schema::plain(columns)
}

/// Every outcome of a file: rows that passed, and all problems.
fn run(schema: &Schema, input: &[u8]) -> (Vec<Row>, Vec<Problem>) {
    run_with(schema, input, schema.encoding).expect("no read error")
}

fn run_with(
    schema: &Schema,
    input: &[u8],
    encoding: Encoding,
) -> Result<(Vec<Row>, Vec<Problem>), ReadError> {
    let received = chrono::NaiveDate::from_ymd_opt(2026, 12, 3).expect("a date");
    let mut rows = match open(schema, input, encoding, received)? {
        Ok(rows) => rows,
        Err(problems) => return Ok((Vec::new(), problems)),
    };
    let mut valid = Vec::new();
    let mut problems = Vec::new();
    while let Some(outcome) = rows.next_outcome()? {
        match outcome {
            Outcome::Valid(row) => valid.push(row),
            Outcome::Invalid(p) => problems.extend(p),
        }
    }
    problems.extend(rows.finish());
    Ok((valid, problems))
}

#[test]
fn every_problem_in_a_file_is_collected_with_line_and_field() {
    let mut id = column(
        "id",
        ColumnKind::String {
            max_length: None,
            pattern: None,
        },
    );
    id.required = true;
    let s = schema(vec![
        id,
        column(
            "n",
            ColumnKind::Integer {
                min: Some(0.0),
                max: Some(10.0),
            },
        ),
    ]);
    let input = b"id,n\nA,1\n,11\nC,x\nD,2,extra\n\"E\nF\",3\n";
    let (rows, problems) = run(&s, input);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[1].line, 6,
        "a quoted field spanning lines starts on line 6"
    );
    let summary: Vec<(u64, Option<usize>, &str)> = problems
        .iter()
        .map(|p| (p.line, p.field, p.code.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, Some(1), "required"),
            (3, Some(2), "out_of_range"),
            (4, Some(2), "not_integer"),
            (5, None, "field_count"),
        ]
    );
    assert_eq!(problems[1].column.as_deref(), Some("n"));
}

#[test]
fn header_problems_are_all_reported() {
    let s = schema(vec![
        column(
            "a",
            ColumnKind::Integer {
                min: None,
                max: None,
            },
        ),
        column(
            "b",
            ColumnKind::Integer {
                min: None,
                max: None,
            },
        ),
    ]);
    let (_, problems) = run(&s, b"a,a,c\n1,2,3\n");
    let codes: Vec<&str> = problems.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(
        codes,
        ["duplicate_column", "unexpected_column", "missing_column"]
    );
    let (_, problems) = run(&s, b"");
    assert_eq!(problems[0].code, "empty_file");
}

#[test]
fn extra_columns_can_be_ignored_and_order_is_free() {
    let mut s = schema(vec![
        column(
            "a",
            ColumnKind::Integer {
                min: None,
                max: None,
            },
        ),
        column(
            "b",
            ColumnKind::Integer {
                min: None,
                max: None,
            },
        ),
    ]);
    s.extra_columns = ExtraColumns::Ignore;
    let (rows, problems) = run(&s, b"b,note,a\n2,hello,1\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows[0].values, vec![Value::Integer(1), Value::Integer(2)]);
}

#[test]
fn bom_crlf_other_delimiters_and_spaced_names() {
    let mut s = schema(vec![
        column(
            "UNIQUE REFERENCE",
            ColumnKind::String {
                max_length: None,
                pattern: None,
            },
        ),
        column(
            "Request: Route of Access",
            ColumnKind::String {
                max_length: None,
                pattern: None,
            },
        ),
    ]);
    s.layout = Layout::Csv(CsvLayout {
        delimiter: b'~',
        quote: b'"',
        positions: None,
        header_record: None,
        trailer_record: None,
    });
    let input = b"\xEF\xBB\xBFUNIQUE REFERENCE~Request: Route of Access\r\nX1~GP\r\n\r\n";
    let (rows, problems) = run(&s, input);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].values[1], Value::Text("GP".into()));
}

#[test]
fn windows_1252_text_is_decoded() {
    let mut s = schema(vec![column(
        "name",
        ColumnKind::String {
            max_length: Some(5),
            pattern: None,
        },
    )]);
    s.encoding = Encoding::Windows1252;
    // 0xE9 is é and 0x80 the euro sign in Windows-1252.
    let (rows, problems) = run(&s, b"name\nRen\xE9e\n\x80\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows[0].values[0], Value::Text("Renée".into()));
    assert_eq!(rows[1].values[0], Value::Text("€".into()));
}

#[test]
fn utf8_feeds_reject_invalid_bytes() {
    let s = schema(vec![column(
        "name",
        ColumnKind::String {
            max_length: None,
            pattern: None,
        },
    )]);
    let (_, problems) = run(&s, b"name\nRen\xE9e\n");
    assert_eq!(problems[0].code, "encoding");
    assert_eq!(problems[0].line, 2);
}

#[test]
fn a_character_split_by_a_delimiter_is_an_encoding_problem_in_both_fields() {
    let s = schema(vec![text_column("a", false), text_column("b", false)]);
    // Joined, `x\xC3` and `\xA9y` would read as UTF-8 (`xéy`); apart, neither does.
    let (rows, problems) = run(&s, b"a,b\nok,fine\nx\xC3,\xA9y\n");
    assert_eq!(rows.len(), 1);
    let found: Vec<_> = problems.iter().map(|p| (p.line, p.field, p.code)).collect();
    assert_eq!(
        found,
        [
            (3, Some(1), crate::problem::Code::Encoding),
            (3, Some(2), crate::problem::Code::Encoding)
        ]
    );
}

#[test]
fn auto_reads_utf8_when_valid_and_windows_1252_otherwise() {
    let s = schema(vec![column(
        "name",
        ColumnKind::String {
            max_length: None,
            pattern: None,
        },
    )]);
    let (rows, _) = run_with(&s, "name\nRenée\n".as_bytes(), Encoding::Auto).unwrap();
    assert_eq!(rows[0].values[0], Value::Text("Renée".into()));
    let (rows, _) = run_with(&s, b"name\nAnn\nRen\xE9e\n", Encoding::Auto).unwrap();
    assert_eq!(rows[1].values[0], Value::Text("Renée".into()));
    // UTF-8 text first, then a byte that is not: the file must be reread.
    let mixed = b"name\nRen\xC3\xA9e\nRen\xE9e\n";
    assert!(matches!(
        run_with(&s, mixed, Encoding::Auto),
        Err(ReadError::EncodingChanged)
    ));
    let (rows, _) = run_with(&s, mixed, Encoding::Windows1252).unwrap();
    assert_eq!(rows[0].values[0], Value::Text("RenÃ©e".into()));
}

fn text_column(name: &str, identifier: bool) -> ColumnSpec {
    ColumnSpec {
        identifier,
        ..column(
            name,
            ColumnKind::String {
                max_length: None,
                pattern: None,
            },
        )
    }
}

#[test]
fn a_file_without_its_header_is_described_never_quoted() {
    let s = schema(vec![
        text_column("resident_id", true),
        ColumnSpec {
            identifier: true,
            ..column("nhs_number", ColumnKind::NhsNumber)
        },
        text_column("family_name", true),
    ]);
    let (_, problems) = run(&s, b"R7,943 476 5919,Smith\nR8,943 476 5919,Jones\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, "no_header");
    assert!(problems[0].message.contains("may lack its header"));
    let shown = format!("{problems:?}");
    for value in ["R7", "943", "Smith"] {
        assert!(!shown.contains(value), "{value} quoted: {shown}");
    }
}

#[test]
fn undeclared_header_cells_are_told_by_position_and_shape() {
    let s = schema(vec![
        text_column("family_name", true),
        text_column("ward", false),
    ]);
    let (_, problems) = run(&s, b"Family Name,ward,9434765919,Smith\n");
    let unexpected: Vec<&Problem> = problems
        .iter()
        .filter(|p| p.code == "unexpected_column")
        .collect();
    assert_eq!(unexpected.len(), 3, "{problems:?}");
    assert!(
        unexpected[0]
            .message
            .contains("declared column `family_name`")
    );
    assert_eq!(unexpected[1].field, Some(3));
    assert!(unexpected[1].message.contains("looks like data"));
    assert!(unexpected[2].message.contains("5 characters"));
    assert!(unexpected.iter().all(|p| p.column.is_none()));
    let shown = format!("{problems:?}");
    assert!(
        !shown.contains("9434765919") && !shown.contains("Smith"),
        "{shown}"
    );
}

#[test]
fn over_long_records_and_fields_are_problems_and_reading_goes_on() {
    let mut s = schema(vec![text_column("a", false), text_column("b", false)]);
    s.max_record_bytes = 1000;
    s.max_field_bytes = 100;
    let mut input = b"a,b\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 1_000_000));
    input.extend(b",y\n");
    input.extend(format!("{},y\nok,fine\n", "z".repeat(101)).as_bytes());
    let (rows, problems) = run(&s, &input);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].line, 4);
    let found: Vec<(u64, &str)> = problems.iter().map(|p| (p.line, p.code.as_str())).collect();
    assert_eq!(found, [(2, "record_too_large"), (3, "field_too_large")]);
    assert!(problems.iter().all(|p| p.message.len() < 200));
    // A first record over the cap leaves no header to read by.
    let (_, problems) = run(&s, &vec![b'\0'; 5000]);
    assert_eq!(problems[0].code, "header_too_large");
}

#[test]
fn an_unclosed_quote_says_where_it_opened() {
    let s = schema(vec![text_column("a", false), text_column("b", false)]);
    let (rows, problems) = run(&s, b"a,b\n1,2\n3,\"four\n5,6\n7,8\n");
    assert_eq!(rows.len(), 1);
    assert_eq!(problems.len(), 1);
    assert_eq!(
        (problems[0].line, problems[0].code.as_str()),
        (3, "unclosed_quote")
    );
    assert!(problems[0].message.contains("opened on line 3"));
}

#[test]
fn a_quote_closed_lines_later_is_pointed_at() {
    let s = schema(vec![text_column("a", false), text_column("b", false)]);
    let (_, problems) = run(&s, b"a,b\n1,2\n3,\"four\n5,6\n7\",8,9\n10,11\n");
    assert_eq!(problems[0].code, "field_count");
    assert!(
        problems[0].message.contains("opened on line 3"),
        "{}",
        problems[0].message
    );
}

#[test]
fn loose_header_names_ignore_case_and_spaces() {
    let mut s = schema(vec![
        text_column("Event Start Date", false),
        text_column("Client ID", false),
    ]);
    let input = b"event start date,CLIENTID\r\n2026-01-02,C1\r\n";
    let (_, problems) = run(&s, input);
    assert_eq!(problems[0].code.as_str(), "no_header", "exact by default");
    s.names = NameMatch::Loose;
    let (rows, problems) = run(&s, input);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows[0].values[1], Value::Text("C1".into()));
}

#[test]
fn an_optional_column_may_be_absent_when_the_feed_allows_it() {
    let mut s = schema(vec![
        text_column("a", false),
        text_column("b", false),
        text_column("c", false),
    ]);
    s.columns[2].required = true;
    s.missing_columns = MissingColumns::Allow;
    let (_, problems) = run(&s, b"a\nx\n");
    let missing: Vec<_> = problems
        .iter()
        .map(|p| (p.code.as_str(), p.column.as_deref()))
        .collect();
    assert_eq!(
        missing,
        [("missing_column", Some("c"))],
        "a required column still must be there"
    );
    let (rows, problems) = run(&s, b"c,a\nz,x\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        rows[0].values,
        [
            Value::Text("x".into()),
            Value::Empty,
            Value::Text("z".into())
        ]
    );
}

#[test]
fn a_file_without_a_header_is_read_by_position_from_its_first_line() {
    let mut s = schema(vec![text_column("id", false), text_column("name", false)]);
    // The file's second field is not wanted; the name is its third.
    s.layout = Layout::Csv(CsvLayout {
        delimiter: b'|',
        quote: b'"',
        positions: Some(vec![Some(0), None, Some(1)]),
        header_record: None,
        trailer_record: None,
    });
    let (rows, problems) = run(&s, b"\xEF\xBB\xBFA1|skip|Ann\nA2|skip|Bo\nA3|short\n");
    assert_eq!(
        rows[0].values[0],
        Value::Text("A1".into()),
        "the byte-order mark is not data"
    );
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].line, 1);
    assert_eq!(rows[1].values[1], Value::Text("Bo".into()));
    assert_eq!(problems.len(), 1);
    assert_eq!(
        (problems[0].line, problems[0].code.as_str()),
        (3, "field_count")
    );
}

/// A tilde-delimited extract: `HDR` record, column names, data, `TRL` record
/// with the count of data records and the total of `qty`.
fn extract_schema() -> Schema {
    let mut s = schema(vec![
        text_column("item", false),
        column(
            "qty",
            ColumnKind::Integer {
                min: None,
                max: None,
            },
        ),
    ]);
    // The header record's field is a column of every record, after the data's.
    s.columns.push(column("sender", ColumnKind::OdsCode));
    s.layout = Layout::Csv(CsvLayout {
        delimiter: b'~',
        quote: b'"',
        positions: None,
        header_record: Some(HeaderRecord {
            tag: Some("HDR".into()),
            fields: vec![(1, column("sender", ColumnKind::OdsCode))],
            first_column: 2,
        }),
        trailer_record: Some(TrailerRecord {
            tag: Some("TRL".into()),
            count_field: Some(1),
            total: Some((2, 1)),
        }),
    });
    s
}

#[test]
fn a_trailer_found_by_position_is_the_last_record_whatever_it_holds() {
    let mut s = extract_schema();
    let Layout::Csv(layout) = &mut s.layout else {
        unreachable!()
    };
    layout.trailer_record = Some(TrailerRecord {
        tag: None,
        count_field: Some(0),
        total: Some((1, 1)),
    });
    let (rows, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\ny~5\n2~7\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), 2);
    let (rows, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\n2~7\n");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        codes(&problems),
        [(4, "trailer_count"), (4, "trailer_total")]
    );
    // A file cut short loses its trailer: its last data record is read as
    // one, and does not add up.
    let (_, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\ny~5\n");
    assert_eq!(
        codes(&problems),
        [(4, "trailer_count"), (4, "trailer_total")]
    );
    let (_, problems) = run(&s, b"HDR~A81001\nitem~qty\n");
    assert_eq!(codes(&problems), [(3, "trailer_record_missing")]);
}

#[test]
fn thousands_of_records_give_every_outcome_in_order_with_its_line() {
    // Invalid and over-long records among valid ones, with a trailer that
    // counts them all.
    let mut s = extract_schema();
    s.max_record_bytes = 200;
    let mut file = String::from("HDR~A81001\nitem~qty\n");
    let (mut expected, mut total, mut valid) = (Vec::new(), 0i64, 0u64);
    for i in 0..5000u64 {
        let line = i + 3;
        if i % 7 == 3 {
            file.push_str(&format!("bad{i}~many\n"));
            expected.push((line, "not_integer"));
        } else if i == 2500 {
            file.push_str(&format!("{}~1\n", "x".repeat(300)));
            expected.push((line, "record_too_large"));
        } else {
            file.push_str(&format!("item{i}~{}\n", i % 10));
            total += (i % 10) as i64;
            valid += 1;
        }
    }
    file.push_str(&format!("TRL~5000~{total}\n"));
    let (rows, problems) = run(&s, file.as_bytes());
    assert_eq!(codes(&problems), expected);
    assert_eq!(rows.len() as u64, valid);
    let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "rows in file order");
    assert_eq!(rows[0].values[0], Value::Text("item0".into()));
    // The trailer's count is of records, valid or not; a wrong one is found
    // after all of them.
    file = file.replace("TRL~5000~", "TRL~4999~");
    let (_, problems) = run(&s, file.as_bytes());
    assert_eq!(
        codes(&problems).last(),
        Some(&(5003, "trailer_count")),
        "{:?}",
        &problems[problems.len().saturating_sub(2)..]
    );
}

/// Every problem as (line, code).
fn codes(problems: &[Problem]) -> Vec<(u64, &str)> {
    problems.iter().map(|p| (p.line, p.code.as_str())).collect()
}

#[test]
fn header_and_trailer_records_frame_the_data_and_the_trailer_counts_it() {
    let s = extract_schema();
    let (rows, problems) = run(&s, b"HDR~A81001~20261203\nitem~qty\nx~2\ny~5\nTRL~2~7\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].line, 4);
    // Every record carries the header record's checked fields.
    assert_eq!(rows[1].values[2], Value::Text("A81001".into()));

    let (_, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\ny~5\nTRL~3~7\n");
    assert_eq!(codes(&problems), [(5, "trailer_count")]);
    let (_, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\ny~5\nTRL~2~8\n");
    assert_eq!(codes(&problems), [(5, "trailer_total")]);
    let (_, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\ny~5\n");
    assert_eq!(
        codes(&problems),
        [(5, "trailer_record_missing")],
        "where it was due"
    );
    let (_, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\nTRL~1~2\ny~5\n");
    assert_eq!(codes(&problems), [(5, "after_trailer")]);
    let (_, problems) = run(&s, b"HDR~A81001\nitem~qty\nx~2\nTRL~one~2\n");
    assert_eq!(codes(&problems), [(4, "trailer_count")]);
    // A count is a whole number: 1.0, 1e0 and -1 are not counts of one record.
    for count in ["1.0", "1e0", "-1"] {
        let input = format!("HDR~A81001\nitem~qty\nx~2\nTRL~{count}~2\n");
        let (_, problems) = run(&s, input.as_bytes());
        assert_eq!(codes(&problems), [(4, "trailer_count")], "{count}");
    }
    let (_, problems) = run(&s, b"item~qty\nx~2\nTRL~1~2\n");
    assert_eq!(codes(&problems), [(1, "header_record_missing")]);
    // The header record's own fields are checked as columns are.
    let (rows, problems) = run(&s, b"HDR~A8-1001\nitem~qty\nx~2\nTRL~1~2\n");
    assert_eq!(codes(&problems), [(1, "not_ods_code")]);
    assert_eq!(problems[0].column.as_deref(), Some("sender"));
    assert!(
        rows.is_empty(),
        "a file whose header record fails is not read on"
    );
    let (_, problems) = run(&s, b"HDR\nitem~qty\nx~2\nTRL~1~2\n");
    assert_eq!(codes(&problems), [(1, "field_count")]);
}

/// A social-care event: type, start and end dates, and an assessment method.
fn event_schema() -> Schema {
    let date = |name| {
        column(
            name,
            ColumnKind::Date {
                format: "%Y-%m-%d".into(),
            },
        )
    };
    let mut s = schema(vec![
        column(
            "Event Type",
            ColumnKind::Code {
                values: CodeList::new(
                    vec!["Service".into(), "Assessment".into(), "Review".into()],
                    false,
                ),
            },
        ),
        date("Event Start Date"),
        date("Event End Date"),
        text_column("Method of Assessment", false),
    ]);
    s.rules = vec![
        // "Event end date required unless the event type is Service".
        Rule::Presence {
            column: 2,
            required: true,
            condition: Condition {
                column: 0,
                test: Test::NoneOf(vec!["Service".into()]),
            },
        },
        // "Method of assessment required when the event type is Assessment",
        // and only then.
        Rule::Presence {
            column: 3,
            required: true,
            condition: Condition {
                column: 0,
                test: Test::OneOf(vec!["Assessment".into()]),
            },
        },
        Rule::Presence {
            column: 3,
            required: false,
            condition: Condition {
                column: 0,
                test: Test::NoneOf(vec!["Assessment".into()]),
            },
        },
        Rule::Compare {
            left: 2,
            op: Comparison::GreaterOrEqual,
            right: 1,
        },
    ];
    s
}

#[test]
fn conditional_and_cross_field_rules_are_checked_per_record() {
    let s = event_schema();
    let header = "Event Type,Event Start Date,Event End Date,Method of Assessment\n";
    let good = format!(
        "{header}Service,2026-01-01,,\nAssessment,2026-01-01,2026-01-02,Face to face\nReview,2026-01-01,2026-01-01,\n"
    );
    let (rows, problems) = run(&s, good.as_bytes());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), 3);

    let bad = format!(
        "{header}Review,2026-01-01,,\nAssessment,2026-01-01,2026-01-02,\nService,2026-01-01,,Phone\nReview,2026-01-05,2026-01-04,\nReview,2026-13-01,,\n"
    );
    let (_, problems) = run(&s, bad.as_bytes());
    let found: Vec<(u64, &str, Option<&str>)> = problems
        .iter()
        .map(|p| (p.line, p.code.as_str(), p.column.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (2, "required_when", Some("Event End Date")),
            (3, "required_when", Some("Method of Assessment")),
            (4, "forbidden_when", Some("Method of Assessment")),
            (5, "comparison", Some("Event End Date")),
            // A record whose own values fail is not judged by the rules too.
            (6, "not_date", Some("Event Start Date")),
        ]
    );
    assert_eq!(
        problems[0].message,
        "`Event End Date` is required when `Event Type` is not Service"
    );
    assert_eq!(
        problems[3].message,
        "the rule `Event End Date >= Event Start Date` does not hold"
    );
}

/// A fixed-width extract: NHS number at 1–10, name at 11–20, quantity at 21–24.
fn fixed_schema(trim: bool) -> Schema {
    let mut s = schema(vec![
        column("nhs_number", ColumnKind::NhsNumber),
        text_column("name", false),
        column(
            "qty",
            ColumnKind::Integer {
                min: None,
                max: None,
            },
        ),
    ]);
    s.layout = Layout::Fixed(FixedLayout {
        spans: vec![(0, 10), (10, 10), (20, 4)],
        trim,
        header_record: None,
        trailer_record: None,
    });
    s
}

#[test]
fn fixed_width_records_are_cut_by_character_and_their_padding_trimmed() {
    let s = fixed_schema(true);
    let input = "9434765919Zoë       0012\r\n\n9434765870Ann Lee   12  \n94347659\n".as_bytes();
    let (rows, problems) = run(&s, input);
    assert_eq!(rows.len(), 2, "{problems:?}");
    assert_eq!(
        rows[0].values[1],
        Value::Text("Zoë".into()),
        "a character, not a byte"
    );
    assert_eq!(rows[0].values[2], Value::Integer(12));
    assert_eq!(rows[1].line, 3, "blank lines are counted, not read");
    assert_eq!(rows[1].values[1], Value::Text("Ann Lee".into()));
    assert_eq!(codes(&problems), [(4, "field_count")]);
    assert_eq!(
        problems[0].message,
        "the record is 8 characters long; the layout needs 24"
    );

    let (rows, _) = run(&fixed_schema(false), b"9434765870Ann Lee   0012\n");
    assert_eq!(
        rows[0].values[1],
        Value::Text("Ann Lee   ".into()),
        "kept as sent"
    );
}

#[test]
fn a_fixed_width_line_over_the_cap_is_a_problem_and_never_held_whole() {
    let mut s = fixed_schema(true);
    s.max_record_bytes = 64;
    let mut input = vec![b'x'; 10_000];
    input.extend_from_slice(b"\n9434765870Ann Lee   0012\n");
    let (rows, problems) = run(&s, &input);
    assert_eq!(codes(&problems), [(1, "record_too_large")]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].line, 2);
}

#[test]
fn iso_8859_1_reads_each_byte_as_its_own_character() {
    let mut s = schema(vec![text_column("name", false)]);
    // 0xE9 is é in both; 0x80 is € in Windows-1252 but a control in ISO-8859-1.
    let input = b"name\nRen\xE9e\n";
    s.encoding = Encoding::Latin1;
    let (rows, problems) = run(&s, input);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows[0].values[0], Value::Text("Renée".into()));
    let (rows, _) = run(&s, b"name\n\x80\n");
    assert_eq!(rows[0].values[0], Value::Text("\u{80}".into()));
    s.encoding = Encoding::Windows1252;
    let (rows, _) = run(&s, b"name\n\x80\n");
    assert_eq!(rows[0].values[0], Value::Text("€".into()));
}

#[test]
fn a_byte_order_mark_does_not_shift_a_fixed_width_first_record() {
    let s = fixed_schema(true);
    let (rows, problems) = run(&s, b"\xEF\xBB\xBF9434765919Ann       0012\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows[0].values[1], Value::Text("Ann".into()));
}

#[test]
fn schema_infer_refuses_a_header_too_wide_to_draft() {
    use crate::formats::infer::{InferError, InferOptions, infer_csv};
    let wide = format!("{}\n1\n", ",".repeat(5000));
    let options = InferOptions {
        feed: "wide",
        partner: "p",
        max_rows: 10,
        code_lists: false,
    };
    assert!(matches!(
        infer_csv(wide.as_bytes(), &options),
        Err(InferError::TooManyColumns)
    ));
}

/// A hospital transfer summary: records are `t:Transfer` under `t:Transfers`,
/// with the NHS number as a child's text, the id as an attribute, and the
/// family name two levels down.
fn xml_schema() -> Schema {
    use crate::schema::{XmlLayout, XmlName, XmlPath};
    let t = |local: &str| XmlName {
        namespace: Some("urn:example:transfer".into()),
        local: local.into(),
    };
    let plain = |local: &str| XmlName {
        namespace: None,
        local: local.into(),
    };
    let mut s = schema(vec![
        column("nhs_number", ColumnKind::NhsNumber),
        text_column("id", false),
        text_column("family", false),
    ]);
    s.layout = Layout::Xml(XmlLayout {
        record: vec![t("Transfers"), t("Transfer")],
        paths: vec![
            XmlPath {
                elements: vec![t("NHSNumber")],
                attribute: None,
            },
            XmlPath {
                elements: vec![],
                attribute: Some(plain("id")),
            },
            XmlPath {
                elements: vec![t("Name"), t("Family")],
                attribute: None,
            },
        ],
        repeat: vec![],
        in_repeat: vec![false; 3],
        max_depth: 8,
        max_attributes: 4,
    });
    s
}

#[test]
fn xml_records_are_elements_at_their_path_with_fields_from_children_and_attributes() {
    let s = xml_schema();
    // The document's prefix is its own: the namespace is what matches.
    let input = br#"<?xml version="1.0" encoding="UTF-8"?>
<x:Transfers xmlns:x="urn:example:transfer">
  <x:Transfer id="T1">
    <x:NHSNumber>9434765919</x:NHSNumber>
    <x:Name><x:Family>O&apos;Brien &amp; Co&#33;</x:Family></x:Name>
    <x:Note>not a column</x:Note>
  </x:Transfer>
  <Transfer id="not ours: no namespace"/>
  <x:Transfer id="T2">
    <x:NHSNumber>9434765918</x:NHSNumber>
  </x:Transfer>
</x:Transfers>
"#;
    let (rows, problems) = run(&s, input);
    assert_eq!(rows.len(), 1, "{problems:?}");
    assert_eq!(rows[0].line, 3, "where the record element starts");
    assert_eq!(rows[0].values[1], Value::Text("T1".into()));
    assert_eq!(rows[0].values[2], Value::Text("O'Brien & Co!".into()));
    assert_eq!(codes(&problems), [(9, "nhs_number_check_digit")]);
}

#[test]
fn xml_in_windows_1252_or_iso_8859_1_is_read_as_its_declaration_or_the_feed_says() {
    let mut s = xml_schema();
    s.encoding = Encoding::Auto;
    let document = |declaration: &str, family: &[u8]| {
        let mut bytes = format!(
            "<?xml version=\"1.0\"{declaration}?>\n<t:Transfers xmlns:t=\"urn:example:transfer\">\n<t:Transfer id=\"T1\"><t:Name><t:Family>"
        )
        .into_bytes();
        bytes.extend_from_slice(family);
        bytes.extend_from_slice(b"</t:Family></t:Name></t:Transfer>\n</t:Transfers>\n");
        bytes
    };
    let family = |rows: &[Row]| rows[0].values[2].clone();
    // Byte 0x80 is the euro sign in Windows-1252 and a control character in ISO-8859-1.
    let (rows, problems) = run(&s, &document(" encoding=\"windows-1252\"", b"Zo\xEB \x80"));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(family(&rows), Value::Text("Zoë €".into()));
    let (rows, _) = run(&s, &document(" encoding='ISO-8859-1'", b"Zo\xEB"));
    assert_eq!(family(&rows), Value::Text("Zoë".into()));
    let (rows, _) = run(&s, &document("", "Zoë".as_bytes()));
    assert_eq!(
        family(&rows),
        Value::Text("Zoë".into()),
        "UTF-8 without a declaration"
    );
    // The feed's own setting wins over what the document says.
    s.encoding = Encoding::Windows1252;
    let (rows, _) = run(&s, &document(" encoding=\"UTF-8\"", b"Zo\xEB"));
    assert_eq!(family(&rows), Value::Text("Zoë".into()));
    // Encodings dropgate does not read are refused, in words of its own.
    s.encoding = Encoding::Auto;
    let (rows, problems) = run(&s, &document(" encoding=\"Shift_JIS\"", b"x"));
    assert!(rows.is_empty());
    assert_eq!(codes(&problems), [(1, "xml_encoding")]);
    assert!(!problems[0].message.contains("Shift"), "{problems:?}");
    let (_, problems) = run(&s, b"\xFF\xFE<\x00?\x00x\x00");
    assert_eq!(codes(&problems), [(1, "xml_encoding")]);
}

#[test]
fn an_xml_dtd_is_refused_before_anything_is_expanded() {
    let s = xml_schema();
    let input = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<t:Transfers xmlns:t="urn:example:transfer"><t:Transfer id="&lol2;"/></t:Transfers>
"#;
    let (rows, problems) = run(&s, input);
    assert!(rows.is_empty());
    assert_eq!(codes(&problems), [(2, "xml_dtd")]);
    assert!(
        problems[0].message.starts_with("line 2, column 1:"),
        "{}",
        problems[0].message
    );
}

#[test]
fn xml_entities_depth_attributes_and_sizes_are_capped_with_their_place() {
    let mut s = xml_schema();
    let open = r#"<t:Transfers xmlns:t="urn:example:transfer">"#;
    // An undeclared entity is a problem of its record, never looked up.
    let input = format!(
        "{open}\n<t:Transfer id=\"1\"><t:NHSNumber>&ext;</t:NHSNumber></t:Transfer></t:Transfers>"
    );
    let (_, problems) = run(&s, input.as_bytes());
    assert_eq!(codes(&problems), [(2, "xml_entity")]);

    let deep = format!("{open}\n{}", "<a>".repeat(20));
    let (_, problems) = run(&s, deep.as_bytes());
    assert_eq!(codes(&problems), [(2, "xml_too_deep")]);
    assert!(
        problems[0].message.starts_with("line 2, column 22:"),
        "{}",
        problems[0].message
    );

    let many = format!("{open}<t:Transfer a=\"1\" b=\"2\" c=\"3\" d=\"4\" e=\"5\"/></t:Transfers>");
    let (_, problems) = run(&s, many.as_bytes());
    assert_eq!(codes(&problems), [(1, "xml_too_many_attributes")]);

    s.max_record_bytes = 1024;
    s.max_field_bytes = 64;
    let long_field = format!(
        "{open}<t:Transfer id=\"{}\"><t:Name><t:Family>{}</t:Family></t:Name></t:Transfer></t:Transfers>",
        "1",
        "y".repeat(100)
    );
    let (_, problems) = run(&s, long_field.as_bytes());
    assert_eq!(codes(&problems), [(1, "field_too_large")]);
    // One text far beyond the limit: the read stops, it is never held whole.
    let huge = format!("{open}<t:Transfer>{}", "z".repeat(1 << 20));
    let (_, problems) = run(&s, huge.as_bytes());
    assert_eq!(codes(&problems), [(1, "xml_malformed")]);
    assert!(
        problems[0].message.contains("max_record_size"),
        "{}",
        problems[0].message
    );

    let repeated = format!(
        "{open}<t:Transfer><t:NHSNumber>9434765919</t:NHSNumber><t:NHSNumber>9434765919</t:NHSNumber></t:Transfer></t:Transfers>"
    );
    let (_, problems) = run(&s, repeated.as_bytes());
    assert_eq!(codes(&problems), [(1, "xml_repeated")]);

    // A prefix never declared is malformed wherever it is, on a path the
    // feed reads or not, on an element or an attribute.
    for undeclared in [
        "<t:Transfer><q:Note/></t:Transfer>",
        "<t:Transfer><t:Other q:a=\"1\"/></t:Transfer>",
        "<u:Elsewhere q:a=\"1\"/>",
    ] {
        let input = format!("{open}\n{undeclared}</t:Transfers>");
        let (_, problems) = run(&s, input.as_bytes());
        assert_eq!(codes(&problems), [(2, "xml_malformed")], "{undeclared}");
    }

    let broken = format!("{open}\n<t:Transfer></t:Other></t:Transfers>");
    let (_, problems) = run(&s, broken.as_bytes());
    assert_eq!(codes(&problems), [(2, "xml_malformed")]);
    // The document's own names are never quoted: a partner controls them.
    let named = format!("{open}\n<t:Transfer></t:N9434765919></t:Transfers>");
    let (_, problems) = run(&s, named.as_bytes());
    assert_eq!(codes(&problems), [(2, "xml_malformed")]);
    assert!(
        !problems[0].message.contains("9434765919"),
        "{}",
        problems[0].message
    );
}

#[test]
fn a_repeating_group_in_xml_makes_a_record_of_each_element_with_the_shared_columns() {
    use crate::schema::{XmlLayout, XmlName, XmlPath};
    let t = |local: &str| XmlName {
        namespace: None,
        local: local.into(),
    };
    let mut s = schema(vec![
        text_column("id", false),
        text_column("code", false),
        text_column("medicine", false),
        text_column("ward", false),
    ]);
    s.layout = Layout::Xml(XmlLayout {
        record: vec![t("Bag"), t("Resident")],
        repeat: vec![t("Medicines"), t("Medicine")],
        paths: vec![
            XmlPath {
                elements: vec![],
                attribute: Some(t("id")),
            },
            XmlPath {
                elements: vec![],
                attribute: Some(t("code")),
            },
            XmlPath {
                elements: vec![t("Name")],
                attribute: None,
            },
            XmlPath {
                elements: vec![t("Ward")],
                attribute: None,
            },
        ],
        in_repeat: vec![false, true, true, false],
        max_depth: 8,
        max_attributes: 4,
    });
    let input = br#"<Bag>
<Resident id="R1">
  <Medicines>
    <Medicine code="322236009"><Name>Paracetamol</Name></Medicine>
    <Medicine code="387207008"><Name>Ibuprofen</Name></Medicine>
  </Medicines>
  <Ward>Elm</Ward>
</Resident>
<Resident id="R2"><Ward>Oak</Ward></Resident>
</Bag>"#;
    let (rows, problems) = run(&s, input);
    assert!(problems.is_empty(), "{problems:?}");
    let text = |v: &Value| match v {
        Value::Text(t) => t.to_string(),
        other => format!("{other:?}"),
    };
    let got: Vec<(u64, Vec<String>)> = rows
        .iter()
        .map(|r| (r.line, r.values.iter().map(text).collect()))
        .collect();
    assert_eq!(
        got[0],
        (
            4,
            vec![
                "R1".into(),
                "322236009".into(),
                "Paracetamol".into(),
                "Elm".into()
            ]
        ),
        "a later shared column is in every record of the group"
    );
    assert_eq!(got[1].0, 5);
    assert_eq!(got[1].1[2], "Ibuprofen");
    assert_eq!(got[1].1[3], "Elm");
    assert_eq!(got[2].0, 9, "no group element: the record element alone");
    assert_eq!(got[2].1[0], "R2");
    assert_eq!(got.len(), 3);
}

#[test]
fn a_record_repeating_an_element_or_a_bad_reference_holds_few_problems() {
    let mut s = xml_schema();
    s.max_record_bytes = 64 << 20;
    let open = r#"<t:Transfers xmlns:t="urn:example:transfer"><t:Transfer>"#;
    let input = format!(
        "{open}{}{}</t:Transfer></t:Transfers>",
        "<t:NHSNumber>9434765919</t:NHSNumber>".repeat(100_000),
        "<t:Name><t:Family>&x;</t:Family></t:Name>".repeat(100_000),
    );
    let (_, problems) = run(&s, input.as_bytes());
    assert!(problems.len() <= 64, "{} problems kept", problems.len());
    let kinds: std::collections::BTreeSet<&str> =
        problems.iter().map(|p| p.code.as_str()).collect();
    assert!(
        kinds.contains("xml_repeated") && kinds.contains("xml_entity"),
        "{kinds:?}"
    );
}

/// The fixed-width schema with a header line (`HDR`, the sender's ODS code
/// at characters 4-9) and a trailer line (`TRL`, the count at 4-9 and the
/// total of `qty` at 10-15), or a trailer found by position.
fn framed_fixed_schema(trailer_tag: Option<&str>) -> Schema {
    let mut s = fixed_schema(true);
    s.columns.push(column("sender", ColumnKind::OdsCode));
    let Layout::Fixed(layout) = &mut s.layout else {
        unreachable!()
    };
    layout.header_record = Some(crate::schema::Framed {
        record: HeaderRecord {
            tag: Some("HDR".into()),
            fields: vec![(0, column("sender", ColumnKind::OdsCode))],
            first_column: 3,
        },
        spans: vec![(3, 6)],
    });
    layout.trailer_record = Some(crate::schema::Framed {
        record: TrailerRecord {
            tag: trailer_tag.map(String::from),
            count_field: Some(0),
            total: Some((1, 2)),
        },
        spans: vec![(3, 6), (9, 6)],
    });
    s
}

#[test]
fn a_fixed_width_file_has_header_and_trailer_lines_as_a_delimited_one_does() {
    let s = framed_fixed_schema(Some("TRL"));
    let data = "9434765919Zoë       0012\n9434765870Ann Lee   0005\n";
    let (rows, problems) = run(&s, format!("HDRA81001\n{data}TRL000002000017\n").as_bytes());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].line, 2);
    assert_eq!(rows[1].values[3], Value::Text("A81001".into()));

    let (_, problems) = run(&s, format!("HDRA81001\n{data}TRL000003000017\n").as_bytes());
    assert_eq!(codes(&problems), [(4, "trailer_count")]);
    let (_, problems) = run(&s, format!("HDRA81001\n{data}TRL000002000018\n").as_bytes());
    assert_eq!(codes(&problems), [(4, "trailer_total")]);
    let (_, problems) = run(&s, format!("HDRA81001\n{data}").as_bytes());
    assert_eq!(codes(&problems), [(3, "trailer_record_missing")]);
    let (_, problems) = run(&s, format!("{data}TRL000002000017\n").as_bytes());
    assert_eq!(codes(&problems), [(1, "header_record_missing")]);
    let (_, problems) = run(&s, format!("HDRA8-001\n{data}TRL000002000017\n").as_bytes());
    assert_eq!(codes(&problems), [(1, "not_ods_code")]);
    let (_, problems) = run(
        &s,
        format!("HDRA81001\n{data}TRL000002000017\n9434765870Ann Lee   0005\n").as_bytes(),
    );
    assert_eq!(codes(&problems), [(5, "after_trailer")]);

    // Without a tag, the last line that is not blank is the trailer.
    let s = framed_fixed_schema(None);
    let (rows, problems) = run(
        &s,
        format!("HDRA81001\n{data}   000002000017\n\n").as_bytes(),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), 2);
    let (_, problems) = run(&s, format!("HDRA81001\n{data}").as_bytes());
    assert_eq!(
        codes(&problems),
        [(3, "trailer_total"), (3, "trailer_count")],
        "cut short: the last data line is read as the trailer"
    );
}

#[test]
fn a_rule_reckons_an_age_on_the_day_the_file_was_received() {
    let mut s = schema(vec![
        text_column("id", false),
        column(
            "born",
            ColumnKind::Date {
                format: "%Y-%m-%d".into(),
            },
        ),
        column(
            crate::schema::RECEIVED_COLUMN,
            ColumnKind::Date {
                format: "%Y-%m-%d".into(),
            },
        ),
    ]);
    s.received_column = Some(2);
    s.rules = vec![Rule::Age {
        born: 1,
        on: 2,
        min: Some(18),
        max: None,
    }];
    // Received on 2026-12-03: 18 on 2026-12-03 passes, the day after does not.
    let (rows, problems) = run(&s, b"id,born\na,2008-12-03\nb,2008-12-04\n");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].values[2],
        Value::Date(chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap())
    );
    assert_eq!(codes(&problems), [(3, "age_out_of_range")]);
}
