//! The contract's duration grammar: `<integer><unit>`, unit one of `ms`, `s`, `m`, `h`, `d`.
//! Nothing else parses: no spaces, no sign, no fraction, no unit words.

use std::fmt;

/// A non-negative span of time in whole milliseconds, as written in a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(i64);

impl Span {
    /// A span of `ms` milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Span(ms)
    }

    /// The span in milliseconds.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Parses the contract's strict grammar; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Span, String> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m, h or d)"))?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "{text:?} is not a duration: expected <integer><unit>, e.g. \"5s\""
            ));
        }
        let factor: i64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "{text:?} is not a duration: unit must be one of ms, s, m, h, d"
                ));
            }
        };
        digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .map(Span)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_of_the_contract_parses() {
        assert_eq!(Span::parse("500ms"), Ok(Span(500)));
        assert_eq!(Span::parse("5s"), Ok(Span(5_000)));
        assert_eq!(Span::parse("30m"), Ok(Span(1_800_000)));
        assert_eq!(Span::parse("1h"), Ok(Span(3_600_000)));
        assert_eq!(Span::parse("2d"), Ok(Span(172_800_000)));
        assert_eq!(Span::parse("0s"), Ok(Span(0)));
    }

    #[test]
    fn the_contracts_counter_examples_are_rejected() {
        for bad in [
            "5 s",
            "1.5s",
            "30 minutes",
            "-5s",
            "",
            "s",
            "5",
            "5S",
            " 5s",
            "5s ",
            "+5s",
            "5sec",
        ] {
            assert!(Span::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(Span::parse("99999999999999999d").is_err());
        assert!(Span::parse("999999999999999999999ms").is_err());
    }
}
