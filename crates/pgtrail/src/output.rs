//! Printing results: an aligned text table for people, JSON or JSON Lines
//! for programs.
//!
//! Data goes to stdout, diagnostics to stderr. Without `--format`, a
//! terminal gets a table and a pipe gets JSON Lines, so `pgtrail log | jq`
//! works without flags. Writes return `io::Error` instead of panicking, so a
//! closed pipe (`pgtrail log | head`) ends the command quietly (see `main`).

use std::io::{self, IsTerminal, Write};

use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, for reading.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Output settings shared by every command.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// The format in effect (`--format`, or chosen from whether stdout is a terminal).
    pub format: Format,
}

impl Output {
    /// `requested` if given, else table on a terminal and jsonl otherwise.
    pub fn new(requested: Option<Format>) -> Self {
        let format = requested.unwrap_or_else(|| {
            if io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Jsonl
            }
        });
        Output { format }
    }

    /// Prints `items` as JSON (an array), JSON Lines (one item per line), or
    /// the text `text` makes of them (usually a rendered [`Table`]).
    pub fn records<T: Serialize>(
        &self,
        items: &[T],
        text: impl FnOnce(&[T]) -> String,
    ) -> io::Result<()> {
        let mut out = io::stdout().lock();
        match self.format {
            Format::Table => out.write_all(text(items).as_bytes())?,
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, items).map_err(io::Error::from)?;
                writeln!(out)?;
            }
            Format::Jsonl => {
                for item in items {
                    serde_json::to_writer(&mut out, item).map_err(io::Error::from)?;
                    writeln!(out)?;
                }
            }
        }
        out.flush()
    }

    /// Prints one JSON value (json and jsonl alike), or `text` for a table.
    pub fn document<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> io::Result<()> {
        let mut out = io::stdout().lock();
        match self.format {
            Format::Table => out.write_all(text().as_bytes())?,
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
                writeln!(out)?;
            }
            Format::Jsonl => {
                serde_json::to_writer(&mut out, value).map_err(io::Error::from)?;
                writeln!(out)?;
            }
        }
        out.flush()
    }
}

/// Prints a line of text to stdout, whatever the format (for messages that
/// are the command's result, such as "imported 20 events").
pub fn line(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Longest cell shown in a table; longer values are cut with `…`.
const MAX_CELL: usize = 60;

/// A text table with a header row.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Whether no rows were added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, columns separated by two spaces.
    pub fn render(&self) -> String {
        let cells: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|row| {
                (0..self.headers.len())
                    .map(|i| shorten(row.get(i).map(String::as_str).unwrap_or("")))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|row| row[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &cells {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// One line, at most [`MAX_CELL`] characters: newlines and tabs become spaces.
fn shorten(cell: &str) -> String {
    let flat: String = cell
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= MAX_CELL {
        return flat;
    }
    let mut cut: String = flat.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_long_cells_are_cut() {
        let mut t = Table::new(&["seq", "user"]);
        t.push(vec!["1".into(), "alice".into()]);
        t.push(vec!["10".into(), "x".repeat(100)]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "seq  user");
        assert_eq!(lines[1], "1    alice");
        assert!(
            lines[2].ends_with('…') && lines[2].chars().count() == 5 + MAX_CELL,
            "{}",
            lines[2]
        );
    }
}
