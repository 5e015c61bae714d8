//! Columns whose values, together, must not repeat within a file. Each
//! record's key is kept as a 128-bit keyed hash with its line, so memory is
//! bounded by a count of records, not by the size of their values.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use super::Row;
use crate::problem::{Code, Problem};
use crate::schema::Schema;

/// Records whose keys are remembered per file, over all of a feed's
/// `unique` sets: 24 bytes each in a table at most 7/8 full, so at most
/// some 26 MiB (and its half-size predecessor while it grows).
pub const MAX_KEYS: usize = 500_000;

/// What a file's records have shown so far.
pub struct Uniqueness<'s> {
    schema: &'s Schema,
    cap: usize,
    hashers: (RandomState, RandomState),
    seen: Vec<HashMap<[u64; 2], u32>>,
    keys: usize,
    /// The cap was reached on this line: no further record is checked.
    full_at: Option<u64>,
}

impl<'s> Uniqueness<'s> {
    pub fn new(schema: &'s Schema) -> Uniqueness<'s> {
        Self::with_cap(schema, MAX_KEYS)
    }

    fn with_cap(schema: &'s Schema, cap: usize) -> Uniqueness<'s> {
        Uniqueness {
            schema,
            cap,
            hashers: (RandomState::new(), RandomState::new()),
            seen: schema.unique.iter().map(|_| HashMap::new()).collect(),
            keys: 0,
            full_at: None,
        }
    }

    /// A problem for each `unique` set whose values this record repeats;
    /// records with any of the set's columns empty are not compared.
    pub fn check(&mut self, row: &Row) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.full_at.is_some() {
            return problems;
        }
        for (set, columns) in self.schema.unique.iter().enumerate() {
            let mut first = self.hashers.0.build_hasher();
            let mut second = self.hashers.1.build_hasher();
            let mut complete = true;
            for &column in columns {
                match row.values[column].to_text() {
                    Some(text) => {
                        text.hash(&mut first);
                        text.hash(&mut second);
                    }
                    None => complete = false,
                }
            }
            if !complete {
                continue;
            }
            let key = [first.finish(), second.finish()];
            let line = u32::try_from(row.line).unwrap_or(u32::MAX);
            if self.keys >= self.cap {
                self.full_at = Some(row.line);
                return problems;
            }
            match self.seen[set].insert(key, line) {
                None => self.keys += 1,
                Some(earlier) => {
                    self.seen[set].insert(key, earlier);
                    let names: Vec<String> = columns
                        .iter()
                        .map(|&c| format!("`{}`", self.schema.columns[c].name))
                        .collect();
                    problems.push(Problem {
                        line: row.line,
                        column: Some(self.schema.columns[columns[0]].name.clone()),
                        field: None,
                        code: Code::NotUnique,
                        message: format!(
                            "the same {} as line {earlier}; they must not repeat within a file",
                            names.join(" and ")
                        ),
                    });
                }
            }
        }
        problems
    }

    /// A problem for the whole file when it had more records than could be
    /// checked.
    pub fn finish(&self) -> Option<Problem> {
        self.full_at.map(|line| {
            Problem::file(
                line,
                Code::UniqueTooMany,
                format!(
                    "uniqueness can be checked for {} records a file; this one has more (from line {line}): split it",
                    self.cap
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnKind, ColumnSpec};
    use crate::validate::Value;

    fn schema() -> Schema {
        let text = |name| {
            ColumnSpec::optional(
                name,
                ColumnKind::String {
                    max_length: None,
                    pattern: None,
                },
            )
        };
        let mut s = Schema::plain(vec![text("id"), text("at"), text("note")]);
        s.unique = vec![vec![0, 1]];
        s
    }

    fn row(line: u64, values: [&str; 3]) -> Row {
        Row {
            line,
            values: values
                .iter()
                .map(|v| {
                    if v.is_empty() {
                        Value::Empty
                    } else {
                        Value::Text((*v).into())
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn a_repeated_key_names_the_earlier_line_and_empty_keys_are_not_compared() {
        let s = schema();
        let mut seen = Uniqueness::new(&s);
        assert!(seen.check(&row(2, ["R1", "09:00", "a"])).is_empty());
        assert!(seen.check(&row(3, ["R1", "10:00", "a"])).is_empty());
        assert!(seen.check(&row(4, ["R1", "", "b"])).is_empty());
        assert!(seen.check(&row(5, ["R1", "", "b"])).is_empty());
        let problems = seen.check(&row(6, ["R1", "09:00", "c"]));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].code, Code::NotUnique);
        assert_eq!(
            problems[0].message,
            "the same `id` and `at` as line 2; they must not repeat within a file"
        );
        // Still the first line, a third time.
        assert!(
            seen.check(&row(7, ["R1", "09:00", "d"]))[0]
                .message
                .contains("line 2")
        );
        assert!(seen.finish().is_none());
    }

    #[test]
    fn past_the_cap_the_file_as_a_whole_is_a_problem() {
        let s = schema();
        let mut seen = Uniqueness::with_cap(&s, 2);
        for line in 1..=5 {
            let id = format!("R{line}");
            assert!(seen.check(&row(line, [id.as_str(), "x", ""])).is_empty());
        }
        let problem = seen.finish().expect("over the cap");
        assert_eq!((problem.line, problem.code), (3, Code::UniqueTooMany));
    }
}
