//! Writes a dataset's Parquet tables, hashing each as it is written. The directory is
//! staged whole ([`crate::atomic::StagedDir`]) and renamed into place at the end, so a
//! killed run never leaves a half dataset where a good one was; the file names and the
//! manifest's seal are [`crate::layout`]'s.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use polars_parquet::write::{
    self as pq, CompressedPage, DynIter, DynStreamingIterator, Encoding, FileWriter, Version,
    WriteOptions, fallible_streaming_iterator,
};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A file writer that hashes what it writes (Parquet is written front to back), so the
/// manifest's SHA-256 needs no second pass over the file.
pub struct HashingWriter {
    file: File,
    hasher: Sha256,
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A Parquet file written batch by batch, one row group per batch.
///
/// Written with `polars-parquet`'s file writer rather than Polars' `ParquetWriter`, for two
/// reasons that were most of the writer's time:
/// - Float columns are written `PLAIN` without first trying a dictionary. Polars tries one
///   for every numeric column: a cardinality estimate over every value, then a cast that
///   floats do not support, and writes `PLAIN` after all. The bytes are the same.
/// - Each column's pages are encoded and compressed on the thread pool, where Polars
///   compresses them one after another as the file is written.
pub struct TableWriter {
    path: PathBuf,
    compression: ParquetCompression,
    inner: Option<Open>,
    pub rows: u64,
}

/// An open file: the writer, the Parquet type and encoding of each column.
struct Open {
    writer: FileWriter<HashingWriter>,
    types: Vec<pq::ParquetType>,
    encodings: Vec<Vec<Encoding>>,
    options: WriteOptions,
}

/// What a finished table reports.
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl TableWriter {
    pub fn new(path: PathBuf, compression: ParquetCompression) -> TableWriter {
        TableWriter {
            path,
            compression,
            inner: None,
            rows: 0,
        }
    }

    fn open(&self, schema: &Schema) -> Result<Open> {
        let file = File::create(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let sink = HashingWriter {
            file,
            hasher: Sha256::new(),
        };
        let arrow = schema.to_arrow(CompatLevel::newest());
        let encodings = arrow
            .iter_values()
            .map(|field| match field.dtype() {
                ArrowDataType::Float32 | ArrowDataType::Float64 => vec![Encoding::Plain],
                dtype => pq::get_dtype_encoding(dtype),
            })
            .collect();
        // No column statistics: readers take rows by position, never by value, and
        // computing the minima and maxima was a twentieth of `gen`.
        let options = WriteOptions {
            statistics: pq::StatisticsOptions::empty(),
            version: Version::V1,
            compression: self.compression.into(),
            data_page_size: None,
        };
        let writer =
            FileWriter::try_new(sink, arrow, options).map_err(|e| failed(&self.path, e))?;
        let types = writer.parquet_schema().fields().to_vec();
        Ok(Open {
            writer,
            types,
            encodings,
            options,
        })
    }

    pub fn write(&mut self, df: &DataFrame) -> Result<()> {
        if self.inner.is_none() {
            self.inner = Some(self.open(df.schema())?);
        }
        if df.height() > 0 {
            let mut df = df.clone();
            df.rechunk_mut();
            let open = self.inner.as_mut().expect("opened above");
            for batch in df.iter_chunks(CompatLevel::newest(), false) {
                let rows = batch.len() as u64;
                let columns = batch
                    .columns()
                    .par_iter()
                    .zip(&open.types)
                    .zip(&open.encodings)
                    .map(|((array, ty), encoding)| column_pages(array, ty, encoding, open.options))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| failed(&self.path, e))?;
                let group = DynIter::new(columns.iter().map(|pages| {
                    Ok(DynStreamingIterator::new(
                        fallible_streaming_iterator::convert(pages.iter().map(Ok)),
                    ))
                }));
                open.writer
                    .write(rows, group)
                    .map_err(|e| failed(&self.path, e))?;
            }
        }
        self.rows += df.height() as u64;
        Ok(())
    }

    /// Closes the file; a table that got no batch is written empty with `empty`'s schema.
    pub fn finish(mut self, empty: &DataFrame) -> Result<Written> {
        if self.inner.is_none() {
            self.inner = Some(self.open(empty.schema())?);
        }
        let mut open = self.inner.take().expect("opened above");
        open.writer.end(None).map_err(|e| failed(&self.path, e))?;
        let sink = open.writer.into_inner();
        let bytes = sink
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        Ok(Written {
            rows: self.rows,
            bytes,
            sha256: format!("{:x}", sink.hasher.finalize()),
        })
    }
}

/// A Parquet error while writing the table at `path`, naming the file.
fn failed(path: &Path, e: impl std::fmt::Display) -> Error {
    let msg = e.to_string();
    let msg = msg.trim_start_matches("parquet: ");
    Error::Save(format!("{}: cannot write: {msg}", path.display()))
}

/// One column of a row group, encoded and compressed into its pages.
fn column_pages(
    array: &ArrayRef,
    ty: &pq::ParquetType,
    encoding: &[Encoding],
    options: WriteOptions,
) -> PolarsResult<Vec<CompressedPage>> {
    let mut pages = Vec::new();
    for leaf in pq::array_to_columns(array, ty.clone(), options, encoding)? {
        for page in leaf {
            pages.push(pq::compress(page?, Vec::new(), options.compression)?);
        }
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u32, rows: u32) -> DataFrame {
        let ids: Vec<u32> = (offset..offset + rows).map(|i| i % 7).collect();
        let x: Vec<f32> = (offset..offset + rows).map(|i| i as f32 * 0.37).collect();
        let at: Vec<Option<i64>> = (offset..offset + rows)
            .map(|i| (i % 3 == 0).then_some(i as i64 * 1_000))
            .collect();
        DataFrame::new_infer_height(vec![
            Column::new("id".into(), ids),
            Column::new("x".into(), x),
            Column::new("at".into(), at),
        ])
        .unwrap()
    }

    /// Batches written one row group each read back as the frames appended, float columns
    /// carry no dictionary and integer ones do, and the reported digest is the file's.
    #[test]
    fn batches_read_back_whole_with_the_file_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut w = TableWriter::new(path.clone(), ParquetCompression::Lz4Raw);
        let (a, b) = (frame(0, 1_000), frame(1_000, 517));
        w.write(&a).unwrap();
        w.write(&frame(0, 0)).unwrap();
        w.write(&b).unwrap();
        let written = w.finish(&frame(0, 0)).unwrap();

        let mut expected = a.clone();
        expected.vstack_mut(&b).unwrap();
        let back = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        assert!(back.equals_missing(&expected));
        assert_eq!(written.rows, 1_517);
        assert_eq!(written.bytes, fs_len(&path));
        assert_eq!(written.sha256, crate::layout::sha256_file(&path).unwrap());

        let meta =
            polars_parquet::parquet::read::read_metadata(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(meta.row_groups.len(), 2);
        let dictionary = |column: usize| {
            meta.row_groups[0].parquet_columns()[column]
                .dictionary_page_offset()
                .is_some()
        };
        assert!(dictionary(0), "the integer column is dictionary-encoded");
        assert!(!dictionary(1), "the float column is written plain");
    }

    fn fs_len(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// A table that got no rows is still a readable file with its schema.
    #[test]
    fn an_empty_table_has_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let w = TableWriter::new(path.clone(), ParquetCompression::Lz4Raw);
        let written = w.finish(&frame(0, 0)).unwrap();
        assert_eq!(written.rows, 0);
        let back = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        assert_eq!(back.height(), 0);
        assert_eq!(back.schema(), frame(0, 0).schema());
    }
}
