//! `[[feeds.NAME.rules]]`: checks across the columns of one record; and
//! `unique`, sets of columns that must not repeat within a file.

use super::*;

impl Checker<'_> {
    pub(super) fn rule(&mut self, raw: Spanned<raw::Rule>, columns: &[ColumnSpec]) -> Option<Rule> {
        let span = raw.span();
        let raw = raw.into_inner();
        let kinds = [
            raw.require.is_some(),
            raw.forbid.is_some(),
            raw.check.is_some(),
            raw.age_of.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.error(
                span,
                "a rule has one of `require`, `forbid`, `check` or `age_of`".to_string(),
            );
            return None;
        }
        for (given, option) in [
            (raw.on.as_ref().map(|s| s.span()), "on"),
            (raw.min_years.as_ref().map(|s| s.span()), "min_years"),
            (raw.max_years.as_ref().map(|s| s.span()), "max_years"),
        ] {
            if let Some(at) = given
                && raw.age_of.is_none()
            {
                self.error(at, format!("`{option}` applies only to an `age_of` rule"));
            }
        }
        if let Some(born) = &raw.age_of {
            return self.age(born, &raw, columns);
        }
        match (&raw.require, &raw.forbid, &raw.check) {
            (Some(column), None, None) => self.presence(column, true, &raw, columns),
            (None, Some(column), None) => self.presence(column, false, &raw, columns),
            (None, None, Some(check)) => {
                for (given, option) in [
                    (raw.when.as_ref().map(|s| s.span()), "when"),
                    (raw.is.as_ref().map(|s| s.span()), "is"),
                    (raw.is_not.as_ref().map(|s| s.span()), "is_not"),
                    (raw.is_empty.as_ref().map(|s| s.span()), "is_empty"),
                ] {
                    if let Some(at) = given {
                        self.error(at, format!("`{option}` does not apply to a `check` rule"));
                    }
                }
                self.comparison(check, columns)
            }
            _ => {
                self.error(
                    span,
                    "a rule has one of `require`, `forbid`, `check` or `age_of`".to_string(),
                );
                None
            }
        }
    }

    fn age(
        &mut self,
        born: &Spanned<String>,
        raw: &raw::Rule,
        columns: &[ColumnSpec],
    ) -> Option<Rule> {
        let is_date = |i: usize| {
            matches!(
                columns[i].kind,
                ColumnKind::Date { .. } | ColumnKind::DateTime { .. }
            )
        };
        let born_at = self.column_index(born, columns);
        let Some(on) = &raw.on else {
            self.at(
                born,
                "an `age_of` rule needs `on`, the date the age is reckoned on",
            );
            return None;
        };
        let on_at = self.column_index(on, columns);
        let mut years = |given: &Option<Spanned<i64>>| match given {
            Some(n) if (0..=200).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                self.at(n, "an age is 0 to 200 years");
                None
            }
            None => None,
        };
        let (min, max) = (years(&raw.min_years), years(&raw.max_years));
        if min.is_none() && max.is_none() {
            self.at(
                born,
                "an `age_of` rule needs `min_years`, `max_years` or both",
            );
            return None;
        }
        let (born_at, on_at) = (born_at?, on_at?);
        for (index, name) in [(born_at, born), (on_at, on)] {
            if !is_date(index) {
                self.at(name, format!("`{}` is not a date column", name.get_ref()));
                return None;
            }
        }
        Some(Rule::Age {
            born: born_at,
            on: on_at,
            min,
            max,
        })
    }

    fn column_index(&mut self, name: &Spanned<String>, columns: &[ColumnSpec]) -> Option<usize> {
        let found = columns.iter().position(|c| &c.name == name.get_ref());
        if found.is_none() && !self.broken_columns.contains(name.get_ref()) {
            self.at(name, format!("no column `{}` in this feed", name.get_ref()));
        }
        found
    }

    fn presence(
        &mut self,
        column: &Spanned<String>,
        required: bool,
        raw: &raw::Rule,
        columns: &[ColumnSpec],
    ) -> Option<Rule> {
        let target = self.column_index(column, columns);
        let Some(when) = &raw.when else {
            self.at(column, "a `require` or `forbid` rule needs `when`");
            return None;
        };
        let subject = self.column_index(when, columns);
        let test = match (&raw.is, &raw.is_not, &raw.is_empty) {
            (Some(codes), None, None) if !codes.get_ref().is_empty() => {
                Test::OneOf(codes.get_ref().clone())
            }
            (None, Some(codes), None) if !codes.get_ref().is_empty() => {
                Test::NoneOf(codes.get_ref().clone())
            }
            (None, None, Some(empty)) if *empty.get_ref() => Test::Empty,
            (None, None, Some(_)) => Test::NotEmpty,
            _ => {
                self.at(
                    when,
                    "`when` needs one of `is`, `is_not` (a non-empty list) or `is_empty`",
                );
                return None;
            }
        };
        if let (Some(target), Some(subject)) = (target, subject)
            && target == subject
        {
            self.at(column, "a rule's column cannot be its own condition");
            return None;
        }
        Some(Rule::Presence {
            column: target?,
            required,
            condition: Condition {
                column: subject?,
                test,
            },
        })
    }

    fn comparison(&mut self, check: &Spanned<String>, columns: &[ColumnSpec]) -> Option<Rule> {
        let text = check.get_ref();
        let Some((left, symbol, right, op)) = Comparison::ALL.iter().find_map(|(symbol, op)| {
            let (left, right) = text.split_once(&format!(" {symbol} "))?;
            Some((left.trim(), *symbol, right.trim(), *op))
        }) else {
            self.at(
                check,
                "a `check` is `LEFT OP RIGHT`: two column names and one of < <= = != >= > between them, with spaces",
            );
            return None;
        };
        let mut find = |name: &str| {
            let found = columns.iter().position(|c| c.name == name);
            if found.is_none() && !self.broken_columns.contains(name) {
                self.at(check, format!("`check`: no column `{name}` in this feed"));
            }
            found
        };
        let (left, right) = (find(left)?, find(right)?);
        let kind = |i: usize| &columns[i].kind;
        let comparable = matches!(
            (kind(left), kind(right)),
            (
                ColumnKind::Date { .. } | ColumnKind::DateTime { .. },
                ColumnKind::Date { .. } | ColumnKind::DateTime { .. }
            ) | (
                ColumnKind::Integer { .. } | ColumnKind::Decimal { .. },
                ColumnKind::Integer { .. } | ColumnKind::Decimal { .. }
            ) | (ColumnKind::Time { .. }, ColumnKind::Time { .. })
        );
        if !comparable {
            self.at(
                check,
                format!(
                    "`check`: a column of type {} cannot be compared with one of type {} (`{symbol}`)",
                    kind(left).describe(),
                    kind(right).describe()
                ),
            );
            return None;
        }
        Some(Rule::Compare { left, op, right })
    }

    pub(super) fn unique_set(
        &mut self,
        set: &Spanned<Vec<String>>,
        columns: &[ColumnSpec],
    ) -> Option<Vec<usize>> {
        if set.get_ref().is_empty() {
            self.at(set, "a `unique` set names at least one column");
            return None;
        }
        let mut indexes = Vec::new();
        for name in set.get_ref() {
            match columns.iter().position(|c| &c.name == name) {
                Some(i) if indexes.contains(&i) => {
                    self.at(set, format!("`unique`: column `{name}` is named twice"));
                }
                Some(i) => indexes.push(i),
                None if self.broken_columns.contains(name) => {}
                None => self.at(set, format!("`unique`: no column `{name}` in this feed")),
            }
        }
        (indexes.len() == set.get_ref().len()).then_some(indexes)
    }
}
