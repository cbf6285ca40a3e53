//! Architecture specification: a typed list of layers parsed once from text or TOML (see ARCHITECTURE.md,
//! "Architecture language").
//!
//! Text form: comma-separated items, e.g. `dense(512,w_std=1.5,b_std=0.1),relu,dense(512),relu,dense(1)`.
//! `dense(width, w_std=1, b_std=none)`: as neural-tangents' `Dense(out_dim, W_std, b_std)`; no `b_std` means no bias.
//! `residual(<layers>)` is x + block(x) (neural-tangents' `FanOut(2), parallel(Identity(), block), FanInSum()`).
//! A general DAG is a list of `node(name, op, input, ...)` items (op: a layer, `sum` or `concat`; the graph
//! input is named `input`; the last node is the output), or the TOML `[[nodes]]` form of
//! [`Architecture::from_toml_str`]. [`Architecture::graph`] compiles either form into a [`super::graph::Graph`].

use std::fmt;
use std::path::Path;

use super::activation::Activation;
use super::spatial::{parse_extents, show_extents, Padding};
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

/// One item of an architecture: a layer, a residual block, a fan-in, or a named DAG node.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Affine layer with `width` outputs; weight scale `w_std`, bias scale `b_std` (None: no bias).
    Dense { width: usize, w_std: f64, b_std: Option<f64> },
    /// Pointwise nonlinearity.
    Activation(Activation),
    /// x + block(x): neural-tangents' `FanOut(2), parallel(Identity(), block), FanInSum()`.
    Residual(Vec<Layer>),
    /// Sum of the node's inputs (neural-tangents `FanInSum`); only as the op of a [`Layer::Node`].
    Sum,
    /// Concatenation of the node's inputs along features (neural-tangents `FanInConcat`); only in a node.
    Concat,
    /// A named DAG node: `node(name, op, input, ...)`; the graph input is `input`.
    Node { name: String, op: Box<Layer>, inputs: Vec<String> },
    /// Convolution (neural-tangents `Conv`): `channels` outputs, a window of extents `filter` (one per spatial
    /// axis), `stride` per axis, `padding`; weight scale `w_std`, bias scale `b_std` (None: no bias).
    Conv { channels: usize, filter: Vec<usize>, stride: Vec<usize>, padding: Padding, w_std: f64, b_std: Option<f64> },
    /// Average pooling (neural-tangents `AvgPool`, dividing by the window size; default stride 1).
    AvgPool { window: Vec<usize>, stride: Vec<usize>, padding: Padding },
    /// Mean over all positions (neural-tangents `GlobalAvgPool`).
    GlobalAvgPool,
    /// Positions and channels into one feature vector (neural-tangents `Flatten`).
    Flatten,
}

/// A stride argument: one value for every axis, or one per axis (`2` or `2x1`).
fn strides(s: Option<&String>, axes: usize, text: &str) -> Result<Vec<usize>> {
    match s {
        None => Ok(vec![1; axes]),
        Some(v) => {
            let st = parse_extents(v, "stride")?;
            match st.len() {
                1 => Ok(vec![st[0]; axes]),
                n if n == axes => Ok(st),
                n => Err(Error::parse(text, format!("{n} strides for a {axes}-d window"))),
            }
        }
    }
}

fn padding_arg(s: Option<&String>) -> Result<Padding> {
    s.map_or(Ok(Padding::Valid), |p| Padding::parse(p))
}

/// A non-negative scale argument (`none` or absent: None).
fn std_arg(call: &Call, v: Option<&String>, name: &str) -> Result<Option<f64>> {
    match v {
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
}

/// Parse a comma-separated layer list (the body of an architecture or of a `residual(...)`).
fn parse_list(text: &str) -> Result<Vec<Layer>> {
    if text.trim().is_empty() {
        return Err(Error::parse(text, "empty layer list"));
    }
    let mut layers = Vec::new();
    for item in split_top(text, ',')? {
        if item.is_empty() {
            return Err(Error::parse(text, "empty layer between commas"));
        }
        layers.push(Layer::parse(&item)?);
    }
    Ok(layers)
}

/// A node or reference name: letters, digits, `_`, `.`, `-`.
fn check_name(name: &str, text: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(Error::parse(text, format!("`{name}` is not a node name (letters, digits, `_`, `.`, `-`)")));
    }
    Ok(())
}

fn write_list(f: &mut fmt::Formatter<'_>, layers: &[Layer]) -> fmt::Result {
    for (i, l) in layers.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{l}")?;
    }
    Ok(())
}

impl Layer {
    /// Whether this is a conv, pooling or flatten layer.
    pub fn is_spatial(&self) -> bool {
        matches!(self, Layer::Conv { .. } | Layer::AvgPool { .. } | Layer::GlobalAvgPool | Layer::Flatten)
    }

    /// Parse one item: `dense(...)`, an activation, `residual(...)`, `sum`, `concat` or `node(...)`.
    pub fn parse(text: &str) -> Result<Layer> {
        let call = Call::parse(text)?;
        match call.name.as_str() {
            "residual" => {
                let inner = text.trim();
                let body = &inner[inner.find('(').map_or(inner.len(), |p| p + 1)..inner.len().saturating_sub(1)];
                if !inner.contains('(') || body.trim().is_empty() {
                    return Err(Error::parse(text, "residual needs a block, e.g. residual(relu,dense(64))"));
                }
                return Ok(Layer::Residual(parse_list(body)?));
            }
            "sum" | "fan_in_sum" | "faninsum" => {
                call.bind(&[])?;
                return Ok(Layer::Sum);
            }
            "concat" | "fan_in_concat" | "faninconcat" => {
                call.bind(&[])?;
                return Ok(Layer::Concat);
            }
            "node" => {
                let args: Vec<&String> =
                    call.args.iter().map(|(k, v)| if k.is_some() { &call.text } else { v }).collect();
                if call.args.iter().any(|(k, _)| k.is_some()) || args.len() < 3 {
                    return Err(Error::parse(
                        text,
                        "a node is node(name, op, input, ...), e.g. node(h1, dense(64), input)",
                    ));
                }
                check_name(args[0], text)?;
                if args[0] == "input" {
                    return Err(Error::parse(text, "`input` is the graph input and cannot name a node"));
                }
                let op = Layer::parse(args[1])?;
                if matches!(op, Layer::Node { .. }) {
                    return Err(Error::parse(text, "nodes cannot be nested"));
                }
                let inputs: Vec<String> = args[2..].iter().map(|s| s.trim().to_string()).collect();
                for i in &inputs {
                    check_name(i, text)?;
                }
                return Ok(Layer::Node { name: args[0].trim().to_string(), op: Box::new(op), inputs });
            }
            _ => {}
        }
        match call.name.as_str() {
            "conv" | "conv2d" | "conv1d" => {
                let slots = call.bind(&["channels", "filter", "stride", "padding", "w_std", "b_std"])?;
                let ch = slots[0].as_ref().ok_or_else(|| {
                    Error::parse(&call.text, "conv needs channels and a filter, e.g. conv(16,3x3,padding=same)")
                })?;
                let channels =
                    ch.trim().parse::<usize>().ok().filter(|c| *c > 0).ok_or_else(|| {
                        Error::parse(&call.text, format!("channels `{ch}` must be a positive integer"))
                    })?;
                let filter = parse_extents(
                    slots[1].as_ref().ok_or_else(|| Error::parse(&call.text, "conv needs a filter, e.g. 3x3"))?,
                    "filter",
                )?;
                let stride = strides(slots[2].as_ref(), filter.len(), &call.text)?;
                let padding = padding_arg(slots[3].as_ref())?;
                let w_std = std_arg(&call, slots[4].as_ref(), "w_std")?.unwrap_or(1.0);
                let b_std = std_arg(&call, slots[5].as_ref(), "b_std")?;
                return Ok(Layer::Conv { channels, filter, stride, padding, w_std, b_std });
            }
            "avg_pool" | "avgpool" => {
                let slots = call.bind(&["window", "stride", "padding"])?;
                let window = parse_extents(
                    slots[0].as_ref().ok_or_else(|| Error::parse(&call.text, "avg_pool needs a window, e.g. 2x2"))?,
                    "window",
                )?;
                let stride = strides(slots[1].as_ref(), window.len(), &call.text)?;
                let padding = padding_arg(slots[2].as_ref())?;
                return Ok(Layer::AvgPool { window, stride, padding });
            }
            "global_avg_pool" | "globalavgpool" | "gap" => {
                call.bind(&[])?;
                return Ok(Layer::GlobalAvgPool);
            }
            "flatten" => {
                call.bind(&[])?;
                return Ok(Layer::Flatten);
            }
            _ => {}
        }
        if call.name == "dense" || call.name == "linear_layer" || call.name == "fc" {
            let slots = call.bind(&["width", "w_std", "b_std"])?;
            let width_s =
                slots[0].as_ref().ok_or_else(|| Error::parse(&call.text, "dense needs a width, e.g. dense(512)"))?;
            let width = width_s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|w| *w > 0)
                .ok_or_else(|| Error::parse(&call.text, format!("width `{width_s}` must be a positive integer")))?;
            let w_std = std_arg(&call, slots[1].as_ref(), "w_std")?.unwrap_or(1.0);
            let b_std = std_arg(&call, slots[2].as_ref(), "b_std")?;
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
            Layer::Residual(block) => {
                f.write_str("residual(")?;
                write_list(f, block)?;
                f.write_str(")")
            }
            Layer::Sum => f.write_str("sum"),
            Layer::Concat => f.write_str("concat"),
            Layer::Node { name, op, inputs } => write!(f, "node({name},{op},{})", inputs.join(",")),
            Layer::Conv { channels, filter, stride, padding, w_std, b_std } => {
                write!(
                    f,
                    "conv({channels},{},stride={},padding={padding},w_std={w_std}",
                    show_extents(filter),
                    show_extents(stride)
                )?;
                match b_std {
                    Some(b) => write!(f, ",b_std={b})"),
                    None => f.write_str(")"),
                }
            }
            Layer::AvgPool { window, stride, padding } => {
                write!(f, "avg_pool({},stride={},padding={padding})", show_extents(window), show_extents(stride))
            }
            Layer::GlobalAvgPool => f.write_str("global_avg_pool"),
            Layer::Flatten => f.write_str("flatten"),
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
    nodes: Option<Vec<NodeToml>>,
    parameterization: Option<String>,
}

/// One `[[nodes]]` entry of the TOML graph form.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeToml {
    name: String,
    op: String,
    /// Default: the previous node (the graph input for the first).
    inputs: Option<Vec<String>>,
}

impl Architecture {
    /// Parse the comma-separated text form.
    pub fn parse(text: &str, parameterization: Parameterization) -> Result<Architecture> {
        if text.trim().is_empty() {
            return Err(Error::Config("the architecture is empty (e.g. \"dense(512),relu,dense(1)\")".into()));
        }
        let layers = parse_list(text)?;
        let arch = Architecture { layers, parameterization };
        arch.validate()?;
        Ok(arch)
    }

    /// Parse a TOML document with `arch = "dense(512),relu,dense(1)"`, `layers = ["dense(512)", "relu", ...]`
    /// or a graph, `[[nodes]]` tables with `name`, `op` (a layer, `sum` or `concat`) and `inputs` (node names,
    /// `input` for the graph input; default: the previous node), the last node being the output; and
    /// optionally `parameterization = "ntk"` (otherwise `default`).
    pub fn from_toml_str(doc: &str, default: Parameterization) -> Result<Architecture> {
        let t: ArchToml = toml::from_str(doc).map_err(|e| Error::Config(format!("architecture TOML: {e}")))?;
        let param = match &t.parameterization {
            Some(p) => Parameterization::parse(p)?,
            None => default,
        };
        match (t.arch, t.layers, t.nodes) {
            (Some(a), None, None) => Architecture::parse(&a, param),
            (None, Some(ls), None) => {
                let layers = ls.iter().map(|l| Layer::parse(l)).collect::<Result<Vec<_>>>()?;
                let arch = Architecture { layers, parameterization: param };
                arch.validate()?;
                Ok(arch)
            }
            (None, None, Some(nodes)) => {
                let mut layers = Vec::with_capacity(nodes.len());
                let mut prev = "input".to_string();
                for n in nodes {
                    let text = format!("node `{}`", n.name);
                    check_name(&n.name, &text)?;
                    let op = Layer::parse(&n.op).map_err(|e| Error::parse(&text, e))?;
                    if matches!(op, Layer::Node { .. }) {
                        return Err(Error::parse(&text, "nodes cannot be nested"));
                    }
                    let inputs = n.inputs.unwrap_or_else(|| vec![prev.clone()]);
                    for i in &inputs {
                        check_name(i, &text)?;
                    }
                    prev = n.name.clone();
                    layers.push(Layer::Node { name: n.name, op: Box::new(op), inputs });
                }
                let arch = Architecture { layers, parameterization: param };
                arch.validate()?;
                Ok(arch)
            }
            _ => Err(Error::Config(
                "architecture TOML needs exactly one of `arch` (string), `layers` (list) or `[[nodes]]` (graph)".into(),
            )),
        }
    }

    /// Read a TOML architecture file.
    pub fn from_toml_file(path: &Path, default: Parameterization) -> Result<Architecture> {
        let doc = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        Self::from_toml_str(&doc, default).map_err(|e| Error::file(path, e))
    }

    /// A sequential architecture from its layers.
    pub fn sequential(layers: Vec<Layer>, parameterization: Parameterization) -> Architecture {
        Architecture { layers, parameterization }
    }

    /// Structural checks shared by kernels and finite networks: at least one layer, named nodes either
    /// everywhere or nowhere, fan-ins only as node ops (the full graph checks are in [`Architecture::graph`]).
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::Config("architecture has no layers".into()));
        }
        let nodes = self.layers.iter().filter(|l| matches!(l, Layer::Node { .. })).count();
        if nodes > 0 && nodes < self.layers.len() {
            return Err(Error::Config(
                "an architecture is either a layer list or a list of node(name, op, inputs...) items, not a mix".into(),
            ));
        }
        fn no_fan_in(ls: &[Layer]) -> Result<()> {
            for l in ls {
                match l {
                    Layer::Sum | Layer::Concat => {
                        return Err(Error::parse(
                            l.to_string(),
                            "`sum` and `concat` need named inputs: use them as the op of a node(...)",
                        ))
                    }
                    Layer::Residual(b) => no_fan_in(b)?,
                    _ => {}
                }
            }
            Ok(())
        }
        no_fan_in(&self.layers)?;
        for l in &self.layers {
            if let Layer::Node { op, .. } = l {
                if let Layer::Residual(b) = op.as_ref() {
                    no_fan_in(b)?;
                }
            }
        }
        Ok(())
    }

    /// Whether this is a plain chain of dense, conv, pooling, flatten and activation layers (no residual
    /// blocks or named nodes): PyTorch `nn.Sequential` names apply.
    pub fn is_plain_chain(&self) -> bool {
        self.layers.iter().all(|l| !matches!(l, Layer::Residual(_) | Layer::Node { .. } | Layer::Sum | Layer::Concat))
    }

    /// Whether any layer (also inside residual blocks and nodes) is a conv, pooling or flatten layer.
    pub fn has_spatial(&self) -> bool {
        fn walk(ls: &[Layer]) -> bool {
            ls.iter().any(|l| match l {
                Layer::Residual(b) => walk(b),
                Layer::Node { op, .. } => walk(std::slice::from_ref(op.as_ref())),
                other => other.is_spatial(),
            })
        }
        walk(&self.layers)
    }

    /// Widths of the Dense layers, in parameter order.
    pub fn widths(&self) -> Vec<usize> {
        fn walk(ls: &[Layer], out: &mut Vec<usize>) {
            for l in ls {
                match l {
                    Layer::Dense { width, .. } => out.push(*width),
                    Layer::Residual(b) => walk(b, out),
                    Layer::Node { op, .. } => walk(std::slice::from_ref(op.as_ref()), out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.layers, &mut out);
        out
    }
}

impl fmt::Display for Architecture {
    /// Canonical text form (parseable by [`Architecture::parse`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, &self.layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_issue_example() {
        let a =
            Architecture::parse("dense(512,w_std=1.5,b_std=0.1),relu,dense(512),relu,dense(1)", Parameterization::Ntk)
                .unwrap();
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
        let a = Architecture::from_toml_str(
            "arch = \"dense(4),erf,dense(1)\"\nparameterization = \"standard\"",
            Parameterization::Ntk,
        )
        .unwrap();
        assert_eq!(a.parameterization, Parameterization::Standard);
        let b =
            Architecture::from_toml_str("layers = [\"dense(4)\", \"erf\", \"dense(1)\"]", Parameterization::Standard)
                .unwrap();
        assert_eq!(a, b);
        assert!(Architecture::from_toml_str("arch = \"relu\"\nlayers = []", Parameterization::Ntk).is_err());
        assert!(Architecture::from_toml_str("archh = \"relu\"", Parameterization::Ntk).is_err());
    }
}
