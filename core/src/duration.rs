//! Human durations (`5s`, `1m30s`, `250ms`) with range checks that name the field.

use std::time::Duration;

/// Parses a human duration and checks it lies in `min..=max`. `field` names what is parsed in
/// the error, e.g. `--lease` or `spec.duration`.
pub fn parse_in_range(
    field: &str,
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| DurationError::Syntax {
        field: field.to_string(),
        value: value.to_string(),
        reason: e.to_string(),
    })?;
    check_range(field, d, min, max)
}

/// Checks that `d` lies in `min..=max`.
pub fn check_range(
    field: &str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, DurationError> {
    if d < min || d > max {
        return Err(DurationError::Range {
            field: field.to_string(),
            value: humantime::format_duration(d).to_string(),
            min: humantime::format_duration(min).to_string(),
            max: humantime::format_duration(max).to_string(),
        });
    }
    Ok(d)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{field}: {value:?} is not a duration ({reason}); use e.g. 500ms, 5s, 1m30s")]
    Syntax {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{field}: {value} is outside the allowed range {min}..={max}")]
    Range {
        field: String,
        value: String,
        min: String,
        max: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_range() {
        let s = Duration::from_secs;
        assert_eq!(parse_in_range("--lease", "5s", s(1), s(60)), Ok(s(5)));
        assert_eq!(parse_in_range("--lease", "1m30s", s(1), s(600)), Ok(s(90)));
        let err = parse_in_range("--lease", "2h", s(1), s(60)).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "--lease: 2h is outside the allowed range 1s..=1m"
        );
        let err = parse_in_range("--lease", "fast", s(1), s(60)).expect_err("syntax");
        assert!(err
            .to_string()
            .starts_with("--lease: \"fast\" is not a duration"));
    }
}
