//! Reading logged rankings (`case_id,score,label`) and per-case metric values
//! (`case_id,value[,user_id]`) from CSV or Parquet, with errors that name the file, line
//! and field.

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};

/// One case: its candidates' scores and labels in their original order.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub id: String,
    pub scores: Vec<f64>,
    pub labels: Vec<f64>,
}

/// A table as named string columns, from CSV or Parquet.
struct Table {
    columns: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

fn bad(path: &Path, msg: String) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        msg,
    }
}

fn read_table(path: &Path) -> Result<Table> {
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if is_parquet {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| bad(path, format!("not a readable Parquet file: {e}")))?;
        let columns: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let as_str: Vec<Column> = df
            .columns()
            .iter()
            .map(|c| c.cast(&DataType::String))
            .collect::<PolarsResult<_>>()
            .map_err(|e| bad(path, e.to_string()))?;
        let rows = (0..df.height())
            .map(|r| {
                let row = as_str
                    .iter()
                    .map(|c| {
                        c.str()
                            .ok()
                            .and_then(|s| s.get(r))
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect();
                (r + 1, row)
            })
            .collect();
        return Ok(Table { columns, rows });
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| bad(path, e.to_string()))?;
    let columns = reader
        .headers()
        .map_err(|e| bad(path, e.to_string()))?
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad(path, e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        rows.push((line, record.iter().map(|s| s.to_string()).collect()));
    }
    Ok(Table { columns, rows })
}

impl Table {
    fn column(&self, path: &Path, name: &str) -> Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            bad(
                path,
                format!("no `{name}` column (columns: {})", self.columns.join(",")),
            )
        })
    }
}

fn number(path: &Path, line: usize, field: &str, text: &str) -> Result<f64> {
    let x: f64 = text.parse().map_err(|_| {
        bad(
            path,
            format!("line {line}: {field} {text:?} is not a number"),
        )
    })?;
    if !x.is_finite() {
        return Err(bad(
            path,
            format!("line {line}: {field} is {text}, not a finite number"),
        ));
    }
    Ok(x)
}

/// Reads rankings: rows `case_id,score,label`; a case's rows are its candidates in order.
/// Cases come out in order of first appearance.
pub fn read_rankings(path: &Path) -> Result<Vec<Case>> {
    let t = read_table(path)?;
    let (ci, si, li) = (
        t.column(path, "case_id")?,
        t.column(path, "score")?,
        t.column(path, "label")?,
    );
    if t.rows.is_empty() {
        return Err(bad(path, "no rows".into()));
    }
    let mut cases: Vec<Case> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (line, row) in &t.rows {
        let id = row[ci].clone();
        if id.is_empty() {
            return Err(bad(path, format!("line {line}: empty case_id")));
        }
        let score = number(path, *line, "score", &row[si])?;
        let label = number(path, *line, "label", &row[li])?;
        if label < 0.0 {
            return Err(bad(path, format!("line {line}: label {label} is negative")));
        }
        let slot = *index.entry(id.clone()).or_insert_with(|| {
            cases.push(Case {
                id,
                scores: Vec::new(),
                labels: Vec::new(),
            });
            cases.len() - 1
        });
        cases[slot].scores.push(score);
        cases[slot].labels.push(label);
    }
    Ok(cases)
}

/// One system's per-case values: (case id, value, optional user id), unique case ids.
pub fn read_values(path: &Path) -> Result<Vec<(String, f64, Option<String>)>> {
    let t = read_table(path)?;
    let (ci, vi) = (t.column(path, "case_id")?, t.column(path, "value")?);
    let ui = t.columns.iter().position(|c| c == "user_id");
    if t.rows.is_empty() {
        return Err(bad(path, "no rows".into()));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let id = row[ci].clone();
        if id.is_empty() {
            return Err(bad(path, format!("line {line}: empty case_id")));
        }
        if let Some(first) = seen.insert(id.clone(), *line) {
            return Err(bad(
                path,
                format!("line {line}: case_id {id:?} repeats line {first}"),
            ));
        }
        let value = number(path, *line, "value", &row[vi])?;
        out.push((id, value, ui.map(|u| row[u].clone())));
    }
    Ok(out)
}
