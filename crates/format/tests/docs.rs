//! The docs a sidecar implementer reads name what the code defines, in the code's order.

use ssmkit_format::features::{CONTEXT_NAMES, FEATURE_NAMES, HOP_FEATURE_NAMES, LAYOUT_VERSION};
use ssmkit_format::history::HISTORY_NAMES;
use ssmkit_format::meta::{FORMAT_VERSION, key};

const LAYOUT: &str = include_str!("../../../docs/feature-layout.md");
const EXPORT: &str = include_str!("../../../docs/export-format.md");

/// Column `column` (0-based) of the first table under `heading`, without backticks.
fn column(doc: &str, heading: &str, column: usize) -> Vec<String> {
    let at = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}`"));
    doc[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cell = l.split('|').nth(column + 1).expect("a cell");
            cell.trim().trim_matches('`').to_string()
        })
        .collect()
}

#[test]
fn the_feature_layout_doc_lists_every_name_in_order() {
    assert!(LAYOUT.contains(LAYOUT_VERSION));
    assert_eq!(
        column(LAYOUT, "## Per-candidate features", 1),
        FEATURE_NAMES
    );
    assert_eq!(column(LAYOUT, "## Turn context", 1), CONTEXT_NAMES);
    assert_eq!(
        column(LAYOUT, "## Traversal-path hops", 1),
        HOP_FEATURE_NAMES
    );
    assert_eq!(column(LAYOUT, "## History features", 1), HISTORY_NAMES);
}

#[test]
fn the_export_format_doc_lists_every_metadata_key() {
    assert!(EXPORT.contains(FORMAT_VERSION));
    assert_eq!(
        column(EXPORT, "## Metadata", 0),
        [
            key::FORMAT_VERSION,
            key::MODEL_CONFIG,
            key::FEATURE_LAYOUT,
            key::QUANTIZATION,
            key::TENSORS_SHA256,
            key::SOURCE,
            key::METADATA_SHA256,
        ]
    );
}
