//! `[feeds.*.map]`: each record kind checks its own section (`records/`);
//! the checker answers its questions about columns, and reports.

use super::*;

impl Checker<'_> {
    pub(super) fn mapping(&mut self, map: crate::records::RawMap, schema: &Schema) -> Mapping {
        let mut columns = MappedColumns {
            checker: self,
            schema,
            used: BTreeMap::new(),
        };
        Mapping::check(map, &mut columns)
    }
}

/// The columns of one feed as its mapping uses them: each at most once.
struct MappedColumns<'c, 't, 's> {
    checker: &'c mut Checker<'t>,
    schema: &'s Schema,
    /// column name -> the `kind.field` it fills
    used: BTreeMap<String, String>,
}

impl MappingChecker for MappedColumns<'_, '_, '_> {
    fn column(
        &mut self,
        kind: &str,
        field: &str,
        column: &Spanned<String>,
        expect: Expect,
    ) -> Option<usize> {
        let name = column.get_ref();
        let Some(index) = self.schema.columns.iter().position(|c| &c.name == name) else {
            if self.checker.broken_columns.contains(name) {
                return None;
            }
            self.checker.at(
                column,
                format!("{kind}.{field} maps column `{name}`, which the feed does not declare"),
            );
            return None;
        };
        let target = format!("{kind}.{field}");
        if let Some(first) = self.used.insert(name.clone(), target.clone()) {
            self.checker.at(
                column,
                format!("column `{name}` is mapped twice: to {first} and to {target}"),
            );
        }
        let declared = &self.schema.columns[index].kind;
        if !expect.fits(declared) {
            self.checker.at(
                column,
                format!(
                    "{target} needs a {} column, but `{name}` is declared as {}",
                    expect.describe(),
                    declared.describe()
                ),
            );
        }
        Some(index)
    }

    fn error_at(&mut self, span: Range<usize>, message: &str) {
        self.checker.error(span, message);
    }
}
