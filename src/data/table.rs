//! Reading parts of a dataset's Parquet tables: row slices, typed columns with their
//! checks, the files' digests.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::bad;
use crate::error::{Error, Result};

/// Checks every table against the SHA-256 the manifest records for it. The files are
/// hashed side by side on the thread pool (a Phase 0 dataset is 9 GB); the first table
/// in [`crate::layout::TABLES`] order that fails is the one reported.
pub(super) fn verify_files(path: &Path, manifest: &crate::manifest::Manifest) -> Result<()> {
    use rayon::prelude::*;
    let checked: Vec<Result<()>> = crate::layout::TABLES
        .par_iter()
        .map(|table| {
            let Some(want) = manifest.files.get(*table).map(|f| &f.sha256) else {
                return Err(bad(
                    path,
                    format!("the manifest records no SHA-256 and row count of {table}"),
                ));
            };
            let file_path = path.join(table);
            if &crate::layout::sha256_file(&file_path)? != want {
                return Err(bad(
                    &file_path,
                    "does not match the SHA-256 the manifest records: the dataset is damaged or was edited",
                ));
            }
            Ok(())
        })
        .collect();
    checked.into_iter().collect()
}

/// Part of one table: the rows read and the number of the first one in the file (error
/// messages give file row numbers).
pub(super) struct Part {
    pub(super) file: PathBuf,
    pub(super) df: DataFrame,
    pub(super) base: usize,
}

impl Part {
    pub(super) fn col(&self, name: &str) -> Result<&Column> {
        self.df
            .column(name)
            .map_err(|_| bad(&self.file, format!("missing column `{name}`")))
    }
}

/// Opens a table and reads its Parquet footer.
pub(super) fn metadata(path: &Path, table: &str) -> Result<Meta> {
    let file_path = path.join(table);
    let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
    let mut reader = ParquetReader::new(file);
    let meta = reader
        .get_metadata()
        .map_err(|e| bad(&file_path, format!("not a readable Parquet table: {e}")))?;
    Ok(meta.clone())
}

pub(super) type Meta = std::sync::Arc<polars::prelude::FileMetadata>;

/// Rows `rows` of a table (only `columns`, when given). Each read maps the file afresh and
/// drops the mapping when done, so memory holds only the rows asked for.
pub(super) fn read_rows(
    path: &Path,
    table: &str,
    meta: &Meta,
    rows: Range<usize>,
    columns: Option<&[&str]>,
) -> Result<Part> {
    let file_path = path.join(table);
    let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
    let mut reader = ParquetReader::new(file);
    reader.set_metadata(meta.clone());
    let df = reader
        .with_slice(Some((rows.start, rows.len())))
        .with_columns(columns.map(|c| c.iter().map(|s| s.to_string()).collect()))
        .finish()
        .map_err(|e| bad(&file_path, format!("not a readable Parquet table: {e}")))?;
    Ok(Part {
        file: file_path,
        df,
        base: rows.start,
    })
}

macro_rules! getter {
    ($fn:ident, $t:ty, $acc:ident) => {
        pub(super) fn $fn(part: &Part, name: &str) -> Result<Vec<$t>> {
            let c = part.col(name)?;
            let ca = c.$acc().map_err(|_| {
                bad(
                    &part.file,
                    format!(
                        "column `{name}` has type {}, expected {}",
                        c.dtype(),
                        stringify!($t)
                    ),
                )
            })?;
            if ca.null_count() > 0 {
                return Err(bad(
                    &part.file,
                    format!("column `{name}` has {} nulls", ca.null_count()),
                ));
            }
            Ok(ca.into_no_null_iter().collect())
        }
    };
}
getter!(any_f32s, f32, f32);

/// A float column, every value finite.
pub(super) fn f32s(part: &Part, name: &str) -> Result<Vec<f32>> {
    let v = any_f32s(part, name)?;
    match v.iter().position(|x| !x.is_finite()) {
        Some(r) => Err(bad(
            &part.file,
            format!(
                "column `{name}` row {} is {}: NaN and infinite values are refused",
                part.base + r,
                v[r]
            ),
        )),
        None => Ok(v),
    }
}
getter!(u32s, u32, u32);
getter!(u16s, u16, u16);
getter!(u8s, u8, u8);
getter!(i32s, i32, i32);
getter!(i64s, i64, i64);

/// Rows read at a time while a table's `user_id` column is scanned.
const SCAN_ROWS: usize = 1 << 22;

/// The runs of equal `user_id` in a table, as (user id, rows), read a slice at a time.
pub(super) fn user_runs(path: &Path, table: &str, meta: &Meta) -> Result<Vec<(u32, Range<usize>)>> {
    let mut runs: Vec<(u32, Range<usize>)> = Vec::new();
    let n = meta.num_rows;
    let mut start = 0;
    while start < n {
        let end = (start + SCAN_ROWS).min(n);
        let part = read_rows(path, table, meta, start..end, Some(&["user_id"]))?;
        for (i, u) in u32s(&part, "user_id")?.into_iter().enumerate() {
            let r = start + i;
            match runs.last_mut() {
                Some((last, rows)) if *last == u => rows.end = r + 1,
                _ => runs.push((u, r..r + 1)),
            }
        }
        start = end;
    }
    Ok(runs)
}
