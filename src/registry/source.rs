//! Registry source files, error locations and "did you mean" suggestions.

use std::fmt;
use std::ops::Range;
use std::path::Path;

/// Largest user registry file accepted (the built-ins are ~20 KB).
pub const MAX_REGISTRY_FILE_BYTES: u64 = 4 << 20;

/// One TOML document the registries were read from: the built-in copy or a user file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// How errors name it: a path, or `built-in schedulers.toml`.
    pub name: String,
    /// The document text.
    pub text: String,
}

impl SourceFile {
    /// The built-in document embedded in the binary.
    pub fn builtin(file_name: &str, text: &str) -> Self {
        Self {
            name: format!("built-in {file_name}"),
            text: text.to_string(),
        }
    }

    /// Reads a user file.
    pub fn read(path: &Path) -> Result<Self, RegistryError> {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_REGISTRY_FILE_BYTES {
            return Err(RegistryError::Io {
                path: path.display().to_string(),
                reason: format!(
                    "the file is {size} bytes; registry files are limited to {MAX_REGISTRY_FILE_BYTES} bytes"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            name: path.display().to_string(),
            text,
        })
    }

    /// The 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// The `[table]` header that the byte offset falls under, for naming the entry of a parse
    /// error (the parser reports only a span).
    pub fn enclosing_table(&self, offset: usize) -> Option<String> {
        let line_end = self
            .text
            .get(offset..)
            .and_then(|rest| rest.find('\n'))
            .map_or(self.text.len(), |i| offset + i);
        self.text
            .get(..line_end)?
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| line.starts_with('[') && line.contains(']'))
            .map(|line| {
                line.get(..=line.find(']').unwrap_or(0))
                    .unwrap_or(line)
                    .to_string()
            })
    }

    /// A location for an error at `span`.
    pub fn location(&self, span: &Range<usize>) -> Location {
        let (line, column) = self.line_col(span.start);
        Location {
            file: self.name.clone(),
            line,
            column,
        }
    }
}

/// File, line and column of a registry error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (path or `built-in ...`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Errors while reading or validating `schedulers.toml` / `models.toml`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read registry file {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// TOML syntax error, unknown key or wrong type (reported by the TOML parser).
    #[error("{location}: {message}")]
    Parse {
        /// Where.
        location: Location,
        /// The parser's message (names the key when a key is unknown).
        message: String,
    },
    /// A semantic problem in one entry: a dangling reference, a duplicate name, a bad value.
    #[error("{location}: {kind} \"{entry}\": {message}")]
    Invalid {
        /// Where the entry (or the offending value) is.
        location: Location,
        /// The entry's table (`sampler`, `schedule`, `preset`, `model`).
        kind: &'static str,
        /// The entry's name.
        entry: String,
        /// What is wrong and what would be valid.
        message: String,
    },
}

impl RegistryError {
    /// Converts a TOML deserialisation error into a located error.
    pub fn from_toml(source: &SourceFile, error: &toml::de::Error) -> Self {
        let span = error.span().unwrap_or(0..0);
        let mut message = error.message().trim().to_string();
        if let Some(table) = source.enclosing_table(span.start) {
            message.push_str(&format!(" (in {table})"));
        }
        RegistryError::Parse {
            location: source.location(&span),
            message,
        }
    }
}

impl RegistryError {
    /// A file that parses but defines no entries (an empty or all-comment file).
    pub fn empty(source: &SourceFile, expected: &str) -> Self {
        RegistryError::Parse {
            location: source.location(&(0..0)),
            message: format!("the file defines no entries; expected {expected} tables"),
        }
    }
}

/// `; did you mean "x"?` for the closest candidate within a small edit distance, else "".
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let wanted_lower = wanted.to_lowercase();
    let best = candidates
        .into_iter()
        .map(|candidate| {
            (
                edit_distance(&wanted_lower, &candidate.to_lowercase()),
                candidate,
            )
        })
        .min_by_key(|(distance, _)| *distance);
    match best {
        Some((distance, candidate)) if distance <= (wanted.chars().count() / 3).max(2) => {
            format!("; did you mean \"{candidate}\"?")
        }
        _ => String::new(),
    }
}

/// Levenshtein distance over chars (Wagner-Fischer, one row).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let source = SourceFile::builtin("x.toml", "a = 1\nbc = 2\n");
        assert_eq!(source.line_col(0), (1, 1));
        assert_eq!(source.line_col(6), (2, 1));
        assert_eq!(source.line_col(9), (2, 4));
    }

    #[test]
    fn suggestions_pick_the_nearest_name() {
        assert_eq!(
            did_you_mean("dpmpp2m", ["euler", "dpmpp_2m", "dpmpp_2s"]),
            "; did you mean \"dpmpp_2m\"?"
        );
        assert_eq!(did_you_mean("zzzzzz", ["euler", "heun"]), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
