//! The feed's rules across the columns of one record: a column required or
//! forbidden when another is as the rule says, and two columns compared.
//! Problems name columns and the rule, never a value.

use std::cmp::Ordering;

use super::Value;
use crate::problem::{Code, Problem};
use crate::schema::{ColumnSpec, Condition, Rule, Schema, Test};

/// Appends a problem for every rule the record's values break.
pub(super) fn check(schema: &Schema, line: u64, values: &[Value], problems: &mut Vec<Problem>) {
    let name = |index: usize| &schema.columns[index].name;
    for rule in &schema.rules {
        match rule {
            Rule::Presence {
                column,
                required,
                condition,
            } => {
                let present = !matches!(values[*column], Value::Empty);
                if present == *required || !holds(condition, &schema.columns, values) {
                    continue;
                }
                let (code, verb) = if *required {
                    (Code::RequiredWhen, "is required")
                } else {
                    (Code::ForbiddenWhen, "must be empty")
                };
                problems.push(Problem {
                    line,
                    column: Some(name(*column).clone()),
                    field: None,
                    code,
                    message: format!(
                        "`{}` {verb} when {}",
                        name(*column),
                        describe(condition, name(condition.column))
                    ),
                });
            }
            Rule::Age { born, on, min, max } => {
                let (Some(born_on), Some(at)) = (date_of(&values[*born]), date_of(&values[*on]))
                else {
                    continue;
                };
                let age = years_between(born_on, at);
                let below = min.is_some_and(|m| age < i64::from(m));
                let above = max.is_some_and(|m| age > i64::from(m));
                if below || above {
                    let bounds = super::bounds(*min, *max);
                    // The age itself is not given: with the other date it
                    // would tell the date of birth.
                    problems.push(Problem {
                        line,
                        column: Some(name(*born).clone()),
                        field: None,
                        code: Code::AgeOutOfRange,
                        message: format!(
                            "the age from `{}` to `{}` is not {bounds} years",
                            name(*born),
                            name(*on)
                        ),
                    });
                }
            }
            Rule::Compare { left, op, right } => {
                let Some(ordering) = compare(&values[*left], &values[*right]) else {
                    continue;
                };
                if !op.holds(ordering) {
                    problems.push(Problem {
                        line,
                        column: Some(name(*left).clone()),
                        field: None,
                        code: Code::Comparison,
                        message: format!(
                            "the rule `{} {} {}` does not hold",
                            name(*left),
                            op.symbol(),
                            name(*right)
                        ),
                    });
                }
            }
        }
    }
}

fn holds(condition: &Condition, columns: &[ColumnSpec], values: &[Value]) -> bool {
    let value = &values[condition.column];
    let text = value.to_text();
    let matches = |codes: &[String]| {
        text.as_deref().is_some_and(|t| {
            codes.iter().any(|c| {
                if columns[condition.column].ignores_case() {
                    c.eq_ignore_ascii_case(t)
                } else {
                    c == t
                }
            })
        })
    };
    match &condition.test {
        Test::OneOf(codes) => matches(codes),
        Test::NoneOf(codes) => !matches(codes),
        Test::Empty => matches!(value, Value::Empty),
        Test::NotEmpty => !matches!(value, Value::Empty),
    }
}

fn describe(condition: &Condition, column: &str) -> String {
    let list = |codes: &[String]| codes.join(", ");
    match &condition.test {
        Test::OneOf(codes) if codes.len() == 1 => format!("`{column}` is {}", codes[0]),
        Test::OneOf(codes) => format!("`{column}` is one of {}", list(codes)),
        Test::NoneOf(codes) if codes.len() == 1 => format!("`{column}` is not {}", codes[0]),
        Test::NoneOf(codes) => format!("`{column}` is none of {}", list(codes)),
        Test::Empty => format!("`{column}` is empty"),
        Test::NotEmpty => format!("`{column}` has a value"),
    }
}

/// The order of two values of comparable kinds; `None` when either is
/// empty (a `required` rule's business) or they cannot be compared.
fn compare(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::Date(a), Value::Date(b)) => Some(a.cmp(b)),
        (Value::DateTime(a), Value::DateTime(b)) => Some(a.cmp(b)),
        (Value::Date(a), Value::DateTime(b)) => Some(a.cmp(&b.date_naive())),
        (Value::DateTime(a), Value::Date(b)) => Some(a.date_naive().cmp(b)),
        (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
        _ => left.as_number()?.partial_cmp(&right.as_number()?),
    }
}

fn date_of(value: &Value) -> Option<chrono::NaiveDate> {
    match value {
        Value::Date(d) => Some(*d),
        Value::DateTime(d) => Some(d.date_naive()),
        _ => None,
    }
}

/// Whole years from `born` to `at` (negative when `at` is earlier).
fn years_between(born: chrono::NaiveDate, at: chrono::NaiveDate) -> i64 {
    use chrono::Datelike;
    let mut years = i64::from(at.year()) - i64::from(born.year());
    if (at.month(), at.day()) < (born.month(), born.day()) {
        years -= 1;
    }
    years
}

#[cfg(test)]
mod tests {
    use super::years_between;
    use chrono::NaiveDate;

    #[test]
    fn an_age_counts_whole_years_to_the_birthday() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(years_between(d(1940, 3, 15), d(2026, 3, 14)), 85);
        assert_eq!(years_between(d(1940, 3, 15), d(2026, 3, 15)), 86);
        assert_eq!(years_between(d(2000, 2, 29), d(2026, 2, 28)), 25);
        assert_eq!(years_between(d(2000, 2, 29), d(2026, 3, 1)), 26);
        assert_eq!(years_between(d(2026, 1, 2), d(2026, 1, 1)), -1);
    }
}
