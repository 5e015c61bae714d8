//! `[feeds.*.map]`: each record kind checks its own section (`records/`);
//! the checker answers its questions about columns, and reports.

use super::*;

impl Checker<'_> {
    pub(super) fn mapping(
        &mut self,
        map: crate::records::RawMap,
        schema: &Schema,
        base: &Path,
    ) -> Mapping {
        let mut columns = MappedColumns {
            checker: self,
            schema,
            base,
            used: BTreeMap::new(),
        };
        Mapping::check(map, &mut columns)
    }
}

/// The columns of one feed as its mapping uses them: each at most once.
struct MappedColumns<'c, 't, 's> {
    checker: &'c mut Checker<'t>,
    schema: &'s Schema,
    /// The config's folder, which translation files are next to.
    base: &'s Path,
    /// (kind, column name) -> the `kind.field` it fills
    used: BTreeMap<(String, String), String>,
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
        let index = self.declared(kind, field, column)?;
        let target = format!("{kind}.{field}");
        // One column may fill fields of several kinds (a row gives several
        // records), but two fields of one kind from one column is a slip.
        if let Some(first) = self
            .used
            .insert((kind.to_string(), name.clone()), target.clone())
        {
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

    fn declared(&mut self, kind: &str, field: &str, column: &Spanned<String>) -> Option<usize> {
        let name = column.get_ref();
        let index = self.schema.columns.iter().position(|c| &c.name == name);
        if index.is_none() && !self.checker.broken_columns.contains(name) {
            self.checker.at(
                column,
                format!("{kind}.{field} names column `{name}`, which the feed does not declare"),
            );
        }
        index
    }

    fn holds(&self, index: usize, expect: Expect) -> bool {
        expect.fits(&self.schema.columns[index].kind)
    }

    fn codes(&self, index: usize) -> Option<Vec<String>> {
        match &self.schema.columns[index].kind {
            ColumnKind::Code { values } => Some(values.codes().to_vec()),
            _ => None,
        }
    }

    fn translation_file(&mut self, file: &Spanned<String>) -> Option<Vec<(String, String)>> {
        self.checker
            .translation_pairs("translate_file", file, self.base)
    }

    fn error_at(&mut self, span: Range<usize>, message: &str) {
        self.checker.error(span, message);
    }
}
