//! A minimal aligned text table for `nub info`.

use std::fmt::Write;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left (numbers).
    Right,
}

/// Rows of cells under a header, rendered with every column as wide as its
/// widest cell and two spaces between columns.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each prefixed with `indent` and ending in `\n`;
    /// no trailing spaces.
    pub fn render(&self, indent: &str) -> String {
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_string();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        let lines: Vec<Vec<String>> = std::iter::once(header)
            .chain(self.rows.iter().cloned())
            .map(|row| (0..self.columns.len()).map(|i| cell(&row, i)).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in &lines {
            let mut text = String::from(indent);
            for (i, value) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let width = widths[i];
                // Writing to a String cannot fail.
                let _ = match self.columns[i].1 {
                    Align::Left => write!(text, "{value:<width$}"),
                    Align::Right => write!(text, "{value:>width$}"),
                };
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&[("name", Align::Left), ("size", Align::Right)]);
        t.row(vec!["heap".into(), "1 MiB".into()]);
        t.row(vec!["input ring".into(), "256 KiB".into()]);
        t.row(vec!["short".into()]);
        assert_eq!(
            t.render("  "),
            "  name           size\n  \
               heap          1 MiB\n  \
               input ring  256 KiB\n  \
               short\n"
        );
    }
}
