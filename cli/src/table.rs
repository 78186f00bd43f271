//! Tables for people: one row per item, columns padded to their widest cell.

use std::fmt;

use serde_json::Value;

/// A table under construction.
pub(crate) struct Table {
    titles: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new(titles: Vec<&str>) -> Self {
        Self {
            titles: titles.into_iter().map(str::to_owned).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// The text of `item` at a dotted `path` (`licenses.total`): strings as they are,
/// null as `-`, anything else as compact JSON.
pub(crate) fn cell(item: &Value, path: &str) -> String {
    let value = path.split('.').fold(item, |v, key| &v[key]);
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.titles.iter().map(|t| t.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let last = cells.len().saturating_sub(1);
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i == last {
                    writeln!(f, "{c}")?;
                } else {
                    write!(f, "{c:<w$}  ")?;
                }
            }
            Ok(())
        };
        line(f, &self.titles)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_and_cells_read_dotted_paths() {
        let mut table = Table::new(vec!["NAME", "TOTAL"]);
        let pages = json!({ "name": "Pages", "licenses": { "total": 10 } });
        let numbers = json!({ "name": "Numbers and more", "licenses": { "total": null } });
        for item in [&pages, &numbers] {
            table.row(vec![cell(item, "name"), cell(item, "licenses.total")]);
        }
        assert_eq!(
            table.to_string(),
            "NAME              TOTAL\nPages             10\nNumbers and more  -\n"
        );
    }
}
