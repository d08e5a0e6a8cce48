//! Parsers for command-line values that clap's own would get wrong for a QA engineer: a number
//! of seconds written `-1` is a mistake in the value, not an unknown option (issue 15: `--timeout
//! -1` said "unexpected argument").

/// A positive number of seconds (`10`, `2.5`). Used with `allow_negative_numbers` so that `-1`
/// reaches here and gets a message about the value.
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 10 or 2.5)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("must be more than 0 seconds (got {s})"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::seconds;

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
