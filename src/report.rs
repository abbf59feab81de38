//! Markdown reports: a title, prose sections, tables and embedded plots, written next to a run's
//! outputs so a reader sees what ran and what came out without opening JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

#[derive(Default)]
pub struct Report {
    body: String,
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self { body: format!("# {title}\n\n") }
    }

    pub fn heading(&mut self, text: &str) -> &mut Self {
        let _ = write!(self.body, "## {text}\n\n");
        self
    }

    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        let _ = write!(self.body, "{}\n\n", text.trim_end());
        self
    }

    /// A table; cells are escaped so `|` in text cannot break it.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> &mut Self {
        let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(self.body, "| {} |", header.join(" | "));
        let _ = writeln!(self.body, "|{}", "---|".repeat(header.len()));
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| esc(c)).collect();
            let _ = writeln!(self.body, "| {} |", cells.join(" | "));
        }
        self.body.push('\n');
        self
    }

    /// Embeds an image by its path relative to the report.
    pub fn image(&mut self, alt: &str, rel_path: &str) -> &mut Self {
        let _ = write!(self.body, "![{alt}]({rel_path})\n\n");
        self
    }

    pub fn code(&mut self, text: &str) -> &mut Self {
        let _ = write!(self.body, "```text\n{}\n```\n\n", text.trim_end());
        self
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, &self.body).with_context(|| format!("writing {}", path.display()))
    }
}
