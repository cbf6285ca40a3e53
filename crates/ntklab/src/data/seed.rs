//! Seeds in config files: every u64 is a seed, but TOML integers stop at 2^63 - 1. A seed field therefore reads a
//! non-negative integer or a decimal string (`seed = "18446744073709551615"`), and writes a plain integer (JSON
//! summaries hold any u64; TOML output of a seed above 2^63 - 1 is an error of the TOML writer, not a wrong
//! value). Use with
//! `#[serde(with = "crate::data::seed")]` (or `crate::data::seed::option` for `Option<u64>`).

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// What the error texts show as the accepted range.
pub const RANGE: &str = "an integer in 0..=18446744073709551615 (above 9223372036854775807 write it as a string, \
                         e.g. seed = \"18446744073709551615\")";

/// Parse a seed from text: a decimal u64, surrounding blanks allowed.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse::<u64>().map_err(|_| format!("seed `{t}` is not {RANGE}"))
}

/// A plain integer.
pub fn serialize<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(*seed)
}

/// A non-negative integer or a decimal string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(SeedVisitor)
}

struct SeedVisitor;

impl Visitor<'_> for SeedVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a seed: {RANGE}")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("seed {v} is negative; a seed is {RANGE}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(format!("seed {v} is not {RANGE}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v).map_err(E::custom)
    }
}

/// The same for `Option<u64>` fields (absent = None).
pub mod option {
    use super::*;

    /// None is skipped by the caller (`skip_serializing_if`) or written as nothing.
    pub fn serialize<S: Serializer>(seed: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match seed {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    /// As [`super::deserialize`], wrapped in Some (absent fields need `#[serde(default)]`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Cfg {
        #[serde(with = "super")]
        seed: u64,
        #[serde(default, with = "super::option", skip_serializing_if = "Option::is_none")]
        other: Option<u64>,
    }

    #[test]
    fn every_u64_reads_and_round_trips() {
        for s in [0u64, 7, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            let c = Cfg { seed: s, other: Some(s) };
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Cfg>(&text).unwrap(), c, "{text}");
            if s <= i64::MAX as u64 {
                let text = toml::to_string(&c).unwrap();
                assert_eq!(toml::from_str::<Cfg>(&text).unwrap(), c, "{text}");
            }
        }
        let c: Cfg = toml::from_str("seed = \"18446744073709551615\"").unwrap();
        assert_eq!((c.seed, c.other), (u64::MAX, None));
        let c: Cfg = toml::from_str("seed = 5\nother = \" 9 \"").unwrap();
        assert_eq!((c.seed, c.other), (5, Some(9)));
    }

    #[test]
    fn bad_seeds_are_named() {
        for (text, want) in [
            ("seed = -1", "negative"),
            ("seed = 1.5", "is not an integer in 0..=18446744073709551615"),
            ("seed = \"18446744073709551616\"", "write it as a string"),
            ("seed = \"abc\"", "seed `abc`"),
        ] {
            let e = toml::from_str::<Cfg>(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
