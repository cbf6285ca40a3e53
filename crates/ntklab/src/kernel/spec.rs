//! A tiny parser for call-like specifications: `name`, `name(1.5)`, `name(a=1, b=2)`, `quad(tanh, 64)`.
//!
//! Used for activations (`leaky_relu(0.1)`) and architectures (`dense(512,w_std=1.5),relu,dense(1)`).

use crate::{Error, Result};

/// One parsed call: a lowercase name and its arguments (positional or `key=value`), as raw text.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Function name, lowercased, `-` read as `_`.
    pub name: String,
    /// Arguments in order; `key` is `None` for positional ones.
    pub args: Vec<(Option<String>, String)>,
    /// The full original text, for error messages.
    pub text: String,
}

/// Split `s` at top-level occurrences of `sep` (ignoring those inside parentheses).
pub fn split_top(s: &str, sep: char) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '(' => {
                depth += 1;
                cur.push(ch)
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(Error::parse(s, "unbalanced `)`"));
                }
                cur.push(ch)
            }
            c if c == sep && depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(Error::parse(s, "unbalanced `(`"));
    }
    out.push(cur);
    Ok(out.into_iter().map(|t| t.trim().to_string()).collect())
}

impl Call {
    /// Parse `name` or `name(args...)`.
    pub fn parse(text: &str) -> Result<Call> {
        let t = text.trim();
        if t.is_empty() {
            return Err(Error::parse(text, "empty item"));
        }
        let (name, inner) = match t.find('(') {
            None => (t, None),
            Some(p) => {
                if !t.ends_with(')') {
                    return Err(Error::parse(t, "expected `)` at the end"));
                }
                (&t[..p], Some(&t[p + 1..t.len() - 1]))
            }
        };
        let name = name.trim().to_lowercase().replace('-', "_");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::parse(t, "expected a name such as `relu` or `dense(512)`"));
        }
        let mut args = Vec::new();
        if let Some(inner) = inner {
            if !inner.trim().is_empty() {
                for a in split_top(inner, ',')? {
                    if a.is_empty() {
                        return Err(Error::parse(t, "empty argument"));
                    }
                    // `key=value` only when `=` is at top level and the key is a plain identifier.
                    match a.find('=') {
                        Some(p) if !a[..p].contains('(') => {
                            let k = a[..p].trim().to_lowercase();
                            args.push((Some(k), a[p + 1..].trim().to_string()))
                        }
                        _ => args.push((None, a)),
                    }
                }
            }
        }
        Ok(Call { name, args, text: t.to_string() })
    }

    /// Bind the arguments to parameter names in order; returns one slot per name (None if not given).
    /// Errors on unknown keywords, too many positional arguments or a parameter given twice.
    pub fn bind(&self, params: &[&str]) -> Result<Vec<Option<String>>> {
        let mut slots: Vec<Option<String>> = vec![None; params.len()];
        let mut pos = 0usize;
        for (k, v) in &self.args {
            let idx = match k {
                None => {
                    if pos >= params.len() {
                        return Err(Error::parse(
                            &self.text,
                            format!(
                                "`{}` takes at most {} argument(s) ({})",
                                self.name,
                                params.len(),
                                params.join(", ")
                            ),
                        ));
                    }
                    pos += 1;
                    pos - 1
                }
                Some(k) => params.iter().position(|p| p == k).ok_or_else(|| {
                    Error::parse(
                        &self.text,
                        format!("unknown parameter `{k}` for `{}` (expected one of: {})", self.name, params.join(", ")),
                    )
                })?,
            };
            if slots[idx].is_some() {
                return Err(Error::parse(&self.text, format!("parameter `{}` given twice", params[idx])));
            }
            slots[idx] = Some(v.clone());
        }
        Ok(slots)
    }

    /// Bind and parse all parameters as finite f64, with defaults.
    pub fn floats(&self, params: &[(&str, f64)]) -> Result<Vec<f64>> {
        let names: Vec<&str> = params.iter().map(|p| p.0).collect();
        let slots = self.bind(&names)?;
        slots
            .into_iter()
            .zip(params)
            .map(|(s, (name, def))| match s {
                None => Ok(*def),
                Some(v) => parse_f64(&v).map_err(|m| Error::parse(&self.text, format!("parameter `{name}`: {m}"))),
            })
            .collect()
    }
}

/// Parse a finite float; accepts `pi` and simple `pi/2`-style fractions for convenience.
pub fn parse_f64(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let v = if let Some(rest) = t.strip_prefix("pi") {
        let rest = rest.trim();
        if rest.is_empty() {
            std::f64::consts::PI
        } else if let Some(d) = rest.strip_prefix('/') {
            std::f64::consts::PI / d.trim().parse::<f64>().map_err(|_| format!("`{t}` is not a number"))?
        } else {
            return Err(format!("`{t}` is not a number"));
        }
    } else {
        t.parse::<f64>().map_err(|_| format!("`{t}` is not a number"))?
    };
    if !v.is_finite() {
        return Err(format!("`{t}` is not finite"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_keywords() {
        let c = Call::parse("quad(elu(alpha=0.5), 64)").unwrap();
        assert_eq!(c.name, "quad");
        assert_eq!(c.args.len(), 2);
        assert_eq!(c.args[0], (None, "elu(alpha=0.5)".to_string()));
        let c = Call::parse("Dense(512, w_std=1.5)").unwrap();
        assert_eq!(c.name, "dense");
        assert_eq!(c.args[1], (Some("w_std".into()), "1.5".into()));
        assert!(Call::parse("dense(512").is_err());
        assert!(Call::parse("a b").is_err());
        let v = Call::parse("erf(2, c=0.5)").unwrap().floats(&[("a", 1.0), ("b", 1.0), ("c", 0.0)]).unwrap();
        assert_eq!(v, vec![2.0, 1.0, 0.5]);
        assert!(Call::parse("erf(d=1)").unwrap().floats(&[("a", 1.0)]).is_err());
        assert!(Call::parse("erf(1,2)").unwrap().floats(&[("a", 1.0)]).is_err());
        assert!(Call::parse("erf(nan)").unwrap().floats(&[("a", 1.0)]).is_err());
    }
}
