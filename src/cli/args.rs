//! Parsers for command-line values that clap's own would get wrong for a QA engineer: a number
//! of seconds written `-1` is a mistake in the value, not an unknown option (issue 15: `--timeout
//! -1` said "unexpected argument").

/// A positive number of seconds (`10`, `2.5`). Used with `allow_negative_numbers` so that `-1`
/// reaches here and gets a message about the value.
pub fn seconds(s: &str) -> Result<f64, String> {
    positive(s, "a number of seconds (e.g. 10 or 2.5)", " seconds")
}

/// A speed factor (`60`, `0.5`): more than 0, like [`seconds`].
pub fn positive_factor(s: &str) -> Result<f64, String> {
    positive(s, "a number (e.g. 60 or 0.5)", "")
}

/// A finite number more than 0, or a message naming what was wanted (`what`) and the unit.
fn positive(s: &str, what: &str, unit: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not {what}"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("must be more than 0{unit} (got {s})"));
    }
    Ok(v)
}

/// A seed: a whole number ≥ 0 (issue 14: a negative seed said "expected a whole number").
pub fn seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<u64>() {
        return Ok(v);
    }
    match t.parse::<i128>() {
        Ok(v) if v < 0 => Err(format!("must be ≥ 0 (got {s})")),
        Ok(_) => Err(format!("must be at most {} (got {s})", u64::MAX)),
        Err(_) => Err(format!("{s:?} is not a whole number ≥ 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::{positive_factor, seconds, seed};

    #[test]
    fn speeds_are_positive_and_seeds_whole_numbers_at_least_zero() {
        assert_eq!(positive_factor("60"), Ok(60.0));
        assert_eq!(
            positive_factor("-1"),
            Err("must be more than 0 (got -1)".into())
        );
        assert!(positive_factor("0").is_err());
        assert!(
            positive_factor("fast")
                .unwrap_err()
                .contains("not a number")
        );
        assert_eq!(seed("7"), Ok(7));
        assert_eq!(seed("-3"), Err("must be ≥ 0 (got -3)".into()));
        assert!(
            seed("99999999999999999999")
                .unwrap_err()
                .contains("at most")
        );
        assert!(seed("1.5").unwrap_err().contains("whole number"));
    }

    #[test]
    fn seconds_are_positive_numbers_with_a_message_that_says_so() {
        assert_eq!(seconds("10"), Ok(10.0));
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert_eq!(
            seconds("-1"),
            Err("must be more than 0 seconds (got -1)".into())
        );
        assert!(seconds("0").unwrap_err().contains("more than 0"));
        assert!(seconds("inf").is_err());
        assert!(
            seconds("ten")
                .unwrap_err()
                .contains("not a number of seconds")
        );
    }
}
