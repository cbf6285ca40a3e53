//! Architecture specification: a typed list of layers parsed once from text or TOML.
//!
//! Text form: comma-separated items, e.g. `dense(512,w_std=1.5,b_std=0.1),relu,dense(512),relu,dense(1)`.
//! `dense(width, w_std=1, b_std=none)`: as neural-tangents' `Dense(out_dim, W_std, b_std)`; no `b_std` means no bias.

use std::fmt;
use std::path::Path;

use super::activation::Activation;
use super::spec::{parse_f64, split_top, Call};
use crate::{Error, Result};

/// How weights are scaled (neural-tangents' 'ntk' and 'standard'; mean-field and muP for finite networks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parameterization {
    /// z = W_std/sqrt(n_in) W h + b_std b, W, b ~ N(0, 1) (Jacot et al. 2018).
    #[default]
    Ntk,
    /// z = W h + b, W ~ N(0, W_std^2/n_in), b ~ N(0, b_std^2).
    Standard,
    /// As 'ntk' in hidden layers, readout scaled 1/n_in instead of 1/sqrt(n_in) (Mei, Montanari, Nguyen 2018).
    MeanField,
    /// Maximal-update parameterization (Yang & Hu 2021); see `net` for the exact table followed.
    Mup,
}

impl Parameterization {
    /// Parse `ntk`, `standard`, `mean-field` (or `mean_field`, `mf`), `mup`.
    pub fn parse(s: &str) -> Result<Parameterization> {
        match s.trim().to_lowercase().replace('_', "-").as_str() {
            "ntk" => Ok(Parameterization::Ntk),
            "standard" | "sp" => Ok(Parameterization::Standard),
            "mean-field" | "meanfield" | "mf" => Ok(Parameterization::MeanField),
            "mup" | "maximal-update" => Ok(Parameterization::Mup),
            other => Err(Error::parse(other, "unknown parameterization (expected ntk, standard, mean-field or mup)")),
        }
    }
}

impl fmt::Display for Parameterization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Parameterization::Ntk => "ntk",
            Parameterization::Standard => "standard",
            Parameterization::MeanField => "mean-field",
            Parameterization::Mup => "mup",
        })
    }
}

/// One layer of a fully-connected network.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Affine layer with `width` outputs; weight scale `w_std`, bias scale `b_std` (None: no bias).
    Dense { width: usize, w_std: f64, b_std: Option<f64> },
    /// Pointwise nonlinearity.
    Activation(Activation),
}

impl Layer {
    /// Parse one item: `dense(...)` or an activation.
    pub fn parse(text: &str) -> Result<Layer> {
        let call = Call::parse(text)?;
        if call.name == "dense" || call.name == "linear_layer" || call.name == "fc" {
            let slots = call.bind(&["width", "w_std", "b_std"])?;
            let width_s = slots[0]
                .as_ref()
                .ok_or_else(|| Error::parse(&call.text, "dense needs a width, e.g. dense(512)"))?;
            let width = width_s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|w| *w > 0)
                .ok_or_else(|| Error::parse(&call.text, format!("width `{width_s}` must be a positive integer")))?;
            let num = |i: usize, name: &str| -> Result<Option<f64>> {
                match &slots[i] {
                    None => Ok(None),
                    Some(v) if v.trim().eq_ignore_ascii_case("none") => Ok(None),
                    Some(v) => {
                        let x = parse_f64(v).map_err(|m| Error::parse(&call.text, format!("{name}: {m}")))?;
                        if x < 0.0 {
                            return Err(Error::parse(&call.text, format!("{name} must be >= 0, got {x}")));
                        }
                        Ok(Some(x))
                    }
                }
            };
            let w_std = num(1, "w_std")?.unwrap_or(1.0);
            let b_std = num(2, "b_std")?;
            Ok(Layer::Dense { width, w_std, b_std })
        } else {
            Ok(Layer::Activation(Activation::from_call(&call)?))
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Dense { width, w_std, b_std: None } => write!(f, "dense({width},w_std={w_std})"),
            Layer::Dense { width, w_std, b_std: Some(b) } => write!(f, "dense({width},w_std={w_std},b_std={b})"),
            Layer::Activation(a) => write!(f, "{a}"),
        }
    }
}

/// A fully-connected architecture: layers in order plus the parameterization of every Dense layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// Layers from input to output.
    pub layers: Vec<Layer>,
    /// Parameterization shared by all Dense layers.
    pub parameterization: Parameterization,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchToml {
    arch: Option<String>,
    layers: Option<Vec<String>>,
    parameterization: Option<String>,
}

impl Architecture {
    /// Parse the comma-separated text form.
    pub fn parse(text: &str, parameterization: Parameterization) -> Result<Architecture> {
        if text.trim().is_empty() {
            return Err(Error::Config("the architecture is empty (e.g. \"dense(512),relu,dense(1)\")".into()));
        }
        let items = split_top(text, ',')?;
        let mut layers = Vec::with_capacity(items.len());
        for item in items {
            if item.is_empty() {
                return Err(Error::parse(text, "empty layer between commas"));
            }
            layers.push(Layer::parse(&item)?);
        }
        let arch = Architecture { layers, parameterization };
        arch.validate()?;
        Ok(arch)
    }

    /// Parse a TOML document with `arch = "dense(512),relu,dense(1)"` or `layers = ["dense(512)", "relu", ...]`,
    /// and optionally `parameterization = "ntk"` (otherwise `default`).
    pub fn from_toml_str(doc: &str, default: Parameterization) -> Result<Architecture> {
        let t: ArchToml = toml::from_str(doc).map_err(|e| Error::Config(format!("architecture TOML: {e}")))?;
        let param = match &t.parameterization {
            Some(p) => Parameterization::parse(p)?,
            None => default,
        };
        match (t.arch, t.layers) {
            (Some(a), None) => Architecture::parse(&a, param),
            (None, Some(ls)) => {
                let layers = ls.iter().map(|l| Layer::parse(l)).collect::<Result<Vec<_>>>()?;
                let arch = Architecture { layers, parameterization: param };
                arch.validate()?;
                Ok(arch)
            }
            _ => Err(Error::Config("architecture TOML needs exactly one of `arch` (string) or `layers` (list)".into())),
        }
    }

    /// Read a TOML architecture file.
    pub fn from_toml_file(path: &Path, default: Parameterization) -> Result<Architecture> {
        let doc = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        Self::from_toml_str(&doc, default).map_err(|e| Error::file(path, e))
    }

    /// Structural checks shared by kernels and finite networks: at least one layer.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::Config("architecture has no layers".into()));
        }
        Ok(())
    }

    /// Dense layers' widths in order.
    pub fn widths(&self) -> Vec<usize> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Dense { width, .. } => Some(*width),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Architecture {
    /// Canonical text form (parseable by [`Architecture::parse`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.layers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_issue_example() {
        let a = Architecture::parse("dense(512,w_std=1.5,b_std=0.1),relu,dense(512),relu,dense(1)", Parameterization::Ntk).unwrap();
        assert_eq!(a.layers.len(), 5);
        assert_eq!(a.layers[0], Layer::Dense { width: 512, w_std: 1.5, b_std: Some(0.1) });
        assert_eq!(a.layers[2], Layer::Dense { width: 512, w_std: 1.0, b_std: None });
        assert_eq!(a.layers[1], Layer::Activation(Activation::Relu));
        let again = Architecture::parse(&a.to_string(), Parameterization::Ntk).unwrap();
        assert_eq!(a, again);
        assert_eq!(a.widths(), vec![512, 512, 1]);
    }

    #[test]
    fn errors_name_the_token() {
        let e = Architecture::parse("dense(512),rleu,dense(1)", Parameterization::Ntk).unwrap_err().to_string();
        assert!(e.contains("rleu"), "{e}");
        let e = Architecture::parse("dense(0),relu", Parameterization::Ntk).unwrap_err().to_string();
        assert!(e.contains("dense(0)"), "{e}");
        let e = Architecture::parse("dense(8,w_std=-1)", Parameterization::Ntk).unwrap_err().to_string();
        assert!(e.contains("w_std"), "{e}");
        assert!(Architecture::parse("dense(8),,relu", Parameterization::Ntk).is_err());
        assert!(Architecture::parse("", Parameterization::Ntk).is_err());
        assert!(Parameterization::parse("lazy").is_err());
    }

    #[test]
    fn toml_forms() {
        let a = Architecture::from_toml_str("arch = \"dense(4),erf,dense(1)\"\nparameterization = \"standard\"", Parameterization::Ntk).unwrap();
        assert_eq!(a.parameterization, Parameterization::Standard);
        let b = Architecture::from_toml_str("layers = [\"dense(4)\", \"erf\", \"dense(1)\"]", Parameterization::Standard).unwrap();
        assert_eq!(a, b);
        assert!(Architecture::from_toml_str("arch = \"relu\"\nlayers = []", Parameterization::Ntk).is_err());
        assert!(Architecture::from_toml_str("archh = \"relu\"", Parameterization::Ntk).is_err());
    }
}
