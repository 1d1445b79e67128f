//! Arrival traces: a CSV file with an `offset_ms` column, or evenly spaced synthetic
//! arrivals.

use std::path::Path;
use std::time::Duration;

/// One arrival per row, as offsets from the start of the trace, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Where the arrivals came from (a file name, or a description of synthetic ones).
    pub name: String,
    /// Offsets from the start, never decreasing.
    pub offsets: Vec<Duration>,
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file has no header line.
    #[error("{path}: the file is empty; expected a header line with an offset_ms column")]
    Empty {
        /// The file.
        path: String,
    },
    /// The header names no `offset_ms` column.
    #[error("{path}: line 1: no offset_ms column in the header {header:?}")]
    NoOffsetColumn {
        /// The file.
        path: String,
        /// The header line as read.
        header: String,
    },
    /// A row has fewer fields than the header puts `offset_ms` at.
    #[error("{path}: line {line}: no offset_ms field (expected at column {column})")]
    MissingField {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: usize,
        /// The 1-based column of `offset_ms`.
        column: usize,
    },
    /// An offset is not a non-negative number of milliseconds.
    #[error(
        "{path}: line {line}: offset_ms {value:?} is not a non-negative number of milliseconds"
    )]
    NotANumber {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: usize,
        /// The field as read.
        value: String,
    },
    /// An offset is smaller than the one before it.
    #[error(
        "{path}: line {line}: offset_ms {value} is before the previous row's {previous}; rows must be sorted by offset_ms"
    )]
    Unsorted {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: usize,
        /// This row's offset, as read.
        value: String,
        /// The previous row's offset, in milliseconds.
        previous: f64,
    },
    /// The synthetic arrival options make no arrivals.
    #[error(
        "--rate and --duration must be positive and finite (got rate {rate}, duration {duration:?})"
    )]
    BadSynthetic {
        /// Arrivals per second.
        rate: f64,
        /// Length of the synthetic trace.
        duration: Duration,
    },
}

impl Trace {
    /// Reads a CSV file; see [`Trace::parse`].
    pub fn read(path: &Path) -> Result<Self, TraceError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut trace = Self::parse(&shown, &text)?;
        trace.name = path
            .file_name()
            .map_or(shown, |n| n.to_string_lossy().into_owned());
        Ok(trace)
    }

    /// Parses CSV text whose header has an `offset_ms` column (any other columns are
    /// ignored). Each row is one arrival; offsets are milliseconds, possibly fractional,
    /// and must not decrease. Blank lines are skipped. `path` only names the source in
    /// errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, TraceError> {
        let mut lines = text.lines().enumerate();
        let header = loop {
            match lines.next() {
                Some((_, l)) if l.trim().is_empty() => continue,
                Some((_, l)) => break l,
                None => {
                    return Err(TraceError::Empty { path: path.into() });
                }
            }
        };
        let column = fields(header)
            .position(|f| f.eq_ignore_ascii_case("offset_ms"))
            .ok_or_else(|| TraceError::NoOffsetColumn {
                path: path.into(),
                header: header.into(),
            })?;
        let mut offsets = Vec::new();
        let mut previous = 0.0_f64;
        for (i, raw) in lines {
            if raw.trim().is_empty() {
                continue;
            }
            let line = i + 1;
            let value = fields(raw)
                .nth(column)
                .ok_or_else(|| TraceError::MissingField {
                    path: path.into(),
                    line,
                    column: column + 1,
                })?;
            let ms: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| TraceError::NotANumber {
                    path: path.into(),
                    line,
                    value: value.into(),
                })?;
            if ms < previous {
                return Err(TraceError::Unsorted {
                    path: path.into(),
                    line,
                    value: value.into(),
                    previous,
                });
            }
            previous = ms;
            offsets.push(Duration::from_secs_f64(ms / 1_000.0));
        }
        Ok(Self {
            name: path.into(),
            offsets,
        })
    }

    /// Evenly spaced arrivals: `rate` per second for `duration`.
    pub fn synthetic(rate: f64, duration: Duration) -> Result<Self, TraceError> {
        if !(rate.is_finite() && rate > 0.0) || duration.is_zero() {
            return Err(TraceError::BadSynthetic { rate, duration });
        }
        let count = (rate * duration.as_secs_f64()).round() as u64;
        let gap = 1.0 / rate;
        let offsets = (0..count)
            .map(|i| Duration::from_secs_f64(i as f64 * gap))
            .collect();
        Ok(Self {
            name: format!(
                "synthetic {rate}/s for {}",
                humantime::format_duration(duration)
            ),
            offsets,
        })
    }

    /// The number of arrivals.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the trace has no arrivals.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The offset of the last arrival.
    pub fn span(&self) -> Duration {
        self.offsets.last().copied().unwrap_or_default()
    }
}

/// The fields of one CSV line, trimmed, with surrounding double quotes removed.
fn fields(line: &str) -> impl Iterator<Item = &str> {
    line.split(',').map(|f| {
        let f = f.trim();
        f.strip_prefix('"')
            .and_then(|f| f.strip_suffix('"'))
            .unwrap_or(f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_and_ignores_other_columns() {
        let t = Trace::parse("t.csv", "source,offset_ms\nconv,0\ncode,1.5\n\nconv,1.5\n").unwrap();
        assert_eq!(
            t.offsets,
            [
                Duration::ZERO,
                Duration::from_micros(1_500),
                Duration::from_micros(1_500)
            ]
        );
    }

    #[test]
    fn synthetic_arrivals_are_evenly_spaced() {
        let t = Trace::synthetic(4.0, Duration::from_secs(2)).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(t.offsets[1], Duration::from_millis(250));
        assert!(Trace::synthetic(0.0, Duration::from_secs(1)).is_err());
    }
}
