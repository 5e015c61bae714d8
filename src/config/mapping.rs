//! `[feeds.*.map]`: which columns fill which record fields.

use super::*;

impl Checker<'_> {
    pub(super) fn mapping(&mut self, map: raw::Map, schema: &Schema) -> Mapping {
        let mut used: BTreeMap<String, String> = BTreeMap::new();
        let observations_span = map.observations.as_ref().map(|m| m.observed_at.span());
        let service_user = map.service_user.map(|m| {
            let mut field =
                |checker: &mut Self, field: &str, col: Option<Spanned<String>>, expect: Expect| {
                    col.and_then(|c| {
                        checker.mapped_column(schema, &mut used, "service_user", field, &c, expect)
                    })
                };
            let local_id = field(self, "local_id", Some(m.local_id), Expect::Text);
            ServiceUserMapping {
                local_id: local_id.unwrap_or(0),
                nhs_number: field(self, "nhs_number", m.nhs_number, Expect::NhsNumber),
                family_name: field(self, "family_name", m.family_name, Expect::Text),
                given_name: field(self, "given_name", m.given_name, Expect::Text),
                date_of_birth: field(self, "date_of_birth", m.date_of_birth, Expect::Date),
                gender: field(self, "gender", m.gender, Expect::Text),
                postcode: field(self, "postcode", m.postcode, Expect::Text),
            }
        });
        let observations = map.observations.map(|m| {
            let observed_at = self.mapped_column(
                schema,
                &mut used,
                "observations",
                "observed_at",
                &m.observed_at,
                Expect::DateTime,
            );
            let vitals = [
                (Vital::RespirationRate, m.respiration_rate, Expect::Number),
                (Vital::Spo2, m.spo2, Expect::Number),
                (Vital::OnOxygen, m.on_oxygen, Expect::Boolean),
                (Vital::SystolicBp, m.systolic_bp, Expect::Number),
                (Vital::DiastolicBp, m.diastolic_bp, Expect::Number),
                (Vital::Pulse, m.pulse, Expect::Number),
                (Vital::Consciousness, m.consciousness, Expect::Text),
                (Vital::Temperature, m.temperature, Expect::Number),
            ];
            let mut columns = Vec::new();
            for (vital, column, expect) in vitals {
                if let Some(column) = column
                    && let Some(index) = self.mapped_column(
                        schema,
                        &mut used,
                        "observations",
                        vital.field(),
                        &column,
                        expect,
                    )
                {
                    columns.push((vital, index));
                }
            }
            ObservationMapping {
                observed_at: observed_at.unwrap_or(0),
                vitals: columns,
                news2: m.news2.unwrap_or(true),
            }
        });
        if let (Some(span), None) = (observations_span, &service_user) {
            self.error(
                span,
                "observations need `map.service_user` to say whose they are",
            );
        }
        Mapping {
            service_user,
            observations,
        }
    }

    pub(super) fn mapped_column(
        &mut self,
        schema: &Schema,
        used: &mut BTreeMap<String, String>,
        record: &str,
        field: &str,
        column: &Spanned<String>,
        expect: Expect,
    ) -> Option<usize> {
        let name = column.get_ref();
        let Some(index) = schema.columns.iter().position(|c| &c.name == name) else {
            if self.broken_columns.contains(name) {
                return None;
            }
            self.at(
                column,
                format!("{record}.{field} maps column `{name}`, which the feed does not declare"),
            );
            return None;
        };
        let target = format!("{record}.{field}");
        if let Some(first) = used.insert(name.clone(), target.clone()) {
            self.at(
                column,
                format!("column `{name}` is mapped twice: to {first} and to {target}"),
            );
        }
        let kind = &schema.columns[index].kind;
        let fits = match expect {
            Expect::Text => true,
            Expect::NhsNumber => matches!(kind, ColumnKind::NhsNumber),
            Expect::Date => matches!(kind, ColumnKind::Date { .. }),
            Expect::DateTime => matches!(kind, ColumnKind::DateTime { .. }),
            Expect::Number => matches!(
                kind,
                ColumnKind::Integer { .. } | ColumnKind::Decimal { .. }
            ),
            Expect::Boolean => matches!(kind, ColumnKind::Boolean { .. }),
        };
        if !fits {
            self.at(
                column,
                format!(
                    "{target} needs a {} column, but `{name}` is declared as {}",
                    expect.describe(),
                    kind.describe()
                ),
            );
        }
        Some(index)
    }
}

#[derive(Clone, Copy)]
pub(super) enum Expect {
    Text,
    NhsNumber,
    Date,
    DateTime,
    Number,
    Boolean,
}

impl Expect {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Expect::Text => "text",
            Expect::NhsNumber => "nhs_number",
            Expect::Date => "date",
            Expect::DateTime => "datetime",
            Expect::Number => "integer or decimal",
            Expect::Boolean => "boolean",
        }
    }
}
