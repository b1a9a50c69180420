//! The JSON Schemas and the AsyncAPI document in the repository are exactly what the
//! Rust types generate. Run with `UPDATE_CONTRACTS=1` to rewrite them after a change.

use std::path::{Path, PathBuf};

use airline_contracts::schema::{asyncapi, schema_files, to_yaml};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn check(path: &Path, expected: &str) -> Option<String> {
    if std::env::var_os("UPDATE_CONTRACTS").is_some() {
        std::fs::create_dir_all(path.parent()?).ok()?;
        std::fs::write(path, expected).ok()?;
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(actual) if actual == expected => None,
        Ok(_) => Some(format!("{} differs from the Rust types", path.display())),
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

#[test]
fn schemas_and_asyncapi_match_the_types() {
    let mut drift = Vec::new();
    let dir = root().join("schemas");
    let files = schema_files();
    drift.extend(
        files
            .iter()
            .filter_map(|(name, text)| check(&dir.join(name), text)),
    );
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !files.iter().any(|(n, _)| *n == name) {
                drift.push(format!("schemas/{name} belongs to no message type"));
            }
        }
    }
    let doc = format!(
        "# Generated from the airline-contracts crate: do not edit.\n# UPDATE_CONTRACTS=1 cargo test -p airline-contracts rewrites it.\n{}",
        to_yaml(&asyncapi())
    );
    drift.extend(check(&root().join("asyncapi.yaml"), &doc));
    assert!(
        drift.is_empty(),
        "{}\nrun `UPDATE_CONTRACTS=1 cargo test -p airline-contracts` and commit the result",
        drift.join("\n")
    );
}
