//! f64 fields that may hold NaN or infinities (a diverged loss, an unbounded divergence factor) in JSON and TOML
//! records: JSON has no such numbers and serde_json writes them as `null`, which then cannot be read back. With
//! `#[serde(with = "crate::data::json_f64")]` (`::opt` for `Option<f64>`, `::vec` for `Vec<f64>`) finite values
//! stay plain numbers and the others are written as the strings `"NaN"`, `"inf"`, `"-inf"`; reading accepts
//! numbers, those strings (and `nan`, `+inf`, `Infinity`) and, for files written before, `null` as NaN.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A number, or its non-finite name.
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// A number, a non-finite name, or null (NaN).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(F64Visitor)
}

struct F64Visitor;

impl Visitor<'_> for F64Visitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, \"NaN\", \"inf\" or \"-inf\"")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v.trim().to_ascii_lowercase().as_str() {
            "nan" => Ok(f64::NAN),
            "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
}

/// One f64 with the rules above, for use inside containers.
#[derive(Clone, Copy)]
struct W(f64);

impl Serialize for W {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for W {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<W, D::Error> {
        deserialize(d).map(W)
    }
}

/// `Option<f64>`: None as null (use with `#[serde(default)]`).
pub mod opt {
    use super::*;

    /// Some(v) as [`super::serialize`], None as null.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_some(&W(*x)),
            None => s.serialize_none(),
        }
    }

    /// null: None; anything else as [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<W>::deserialize(d).map(|o| o.map(|w| w.0))
    }
}

/// `Vec<f64>`.
pub mod vec {
    use super::*;

    /// Each element as [`super::serialize`].
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&W(*x))?;
        }
        seq.end()
    }

    /// Each element as [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<f64>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<f64>, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(W(x)) = a.next_element()? {
                    out.push(x);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct R {
        #[serde(with = "super")]
        a: f64,
        #[serde(default, with = "super::opt")]
        b: Option<f64>,
        #[serde(with = "super::vec")]
        c: Vec<f64>,
    }

    #[test]
    fn non_finite_values_round_trip_through_json_and_toml() {
        let r = R { a: f64::NAN, b: Some(f64::NEG_INFINITY), c: vec![1.5, f64::INFINITY, f64::NAN] };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"a":"NaN","b":"-inf","c":[1.5,"inf","NaN"]}"#);
        let back: R = serde_json::from_str(&j).unwrap();
        assert!(
            back.a.is_nan() && back.b == Some(f64::NEG_INFINITY) && back.c[1] == f64::INFINITY && back.c[2].is_nan()
        );
        let t = toml::to_string(&R { a: 2.0, b: None, c: vec![] }).unwrap();
        let back: R = toml::from_str(&t).unwrap();
        assert_eq!((back.a, back.b), (2.0, None));
        // Files written before: null as NaN; TOML's own inf.
        let old: R = serde_json::from_str(r#"{"a":null,"b":null,"c":[null,2]}"#).unwrap();
        assert!(old.a.is_nan() && old.b.is_none() && old.c[0].is_nan());
        let t: R = toml::from_str("a = inf\nc = [nan]").unwrap();
        assert!(t.a == f64::INFINITY && t.c[0].is_nan());
    }
}
