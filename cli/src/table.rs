//! A plain-text table renderer: aligned columns separated by two spaces, no trailing blanks,
//! cells kept on one line.

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Rows of text under a header line.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with left-aligned columns named by `headers`.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| clean(h)).collect(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Aligns column `index` (ignored when out of range).
    pub fn align(mut self, index: usize, align: Align) -> Self {
        if let Some(a) = self.align.get_mut(index) {
            *a = align;
        }
        self
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.headers.len())
            .map(|c| clean(c.as_ref()))
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The table as text, one line per row, each line ending in `\n`.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                std::iter::once(&self.headers[i])
                    .chain(self.rows.iter().map(|r| &r[i]))
                    .map(|c| width(c))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - width(cell));
                match self.align[i] {
                    Align::Left => {
                        text.push_str(cell);
                        text.push_str(&pad);
                    }
                    Align::Right => {
                        text.push_str(&pad);
                        text.push_str(cell);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width of a cell (one column per character; cells are plain text).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// Keeps a cell on one line: control characters (newlines, tabs, escapes) become spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(&["NAME", "STATUS", "CPU"]).align(2, Align::Right);
        t.row(["node-a", "connected", "3.0%"]);
        t.row(["n", "disconnected", "100.0%"]);
        assert_eq!(
            t.render(),
            "NAME    STATUS           CPU\n\
             node-a  connected       3.0%\n\
             n       disconnected  100.0%\n"
        );
    }

    #[test]
    fn no_trailing_blanks_and_header_only_when_empty() {
        let mut t = Table::new(&["A", "LONG HEADER"]);
        assert_eq!(t.render(), "A  LONG HEADER\n");
        t.row(["wide cell here", ""]);
        let text = t.render();
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{text:?}");
        assert_eq!(text, "A               LONG HEADER\nwide cell here\n");
    }

    #[test]
    fn control_characters_cannot_break_lines() {
        let mut t = Table::new(&["DETAIL", "X"]);
        t.row(["two\nlines\there", "x"]);
        assert_eq!(t.render(), "DETAIL          X\ntwo lines here  x\n");
    }

    #[test]
    fn short_rows_are_padded_and_long_rows_cut() {
        let mut t = Table::new(&["A", "B"]);
        t.row(["1"]);
        t.row(["1", "2", "3"]);
        assert_eq!(t.render(), "A  B\n1\n1  2\n");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&["N", "V"]);
        t.row(["ü", "1"]);
        t.row(["ab", "2"]);
        assert_eq!(t.render(), "N   V\nü   1\nab  2\n");
    }
}
