//! The compiled network graph that both views traverse: nodes in topological order, node 0 the input, the
//! last node the output, every node on a path to the output. Compiled once from an [`Architecture`] (either
//! form: a layer list with `residual(...)` blocks, or named `node(...)` items).
//!
//! Node names: in a layer list, top-level item p is named `p` (PyTorch `nn.Sequential` indices); the layers
//! of a `residual(...)` at p are `p.0`, `p.1`, ... and the residual sum itself is `p`. In a DAG, the names given.

use std::collections::HashMap;

use super::activation::Activation;
use super::arch::{Architecture, Layer};
use super::spatial::{Padding, Shape, Window};
use crate::{Error, Result};

/// What a node computes from its inputs (rows are examples; widths are feature counts).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The network input X (N x d).
    Input,
    /// Affine map to `width` features; see `crate::net` for the parameterizations.
    Dense { width: usize, w_std: f64, b_std: Option<f64> },
    /// Pointwise nonlinearity.
    Activation(Activation),
    /// Sum of the inputs (equal widths): neural-tangents `FanInSum`.
    Sum,
    /// Concatenation of the inputs' features: neural-tangents `FanInConcat(axis=-1)`.
    Concat,
    /// Convolution over the spatial axes (see [`Layer::Conv`]).
    Conv { channels: usize, filter: Vec<usize>, stride: Vec<usize>, padding: Padding, w_std: f64, b_std: Option<f64> },
    /// Average pooling (see [`Layer::AvgPool`]).
    AvgPool { window: Vec<usize>, stride: Vec<usize>, padding: Padding },
    /// Mean over positions.
    GlobalAvgPool,
    /// Positions and channels into one feature vector.
    Flatten,
}

impl Op {
    /// The architecture-language item this op came from (None for the graph input); its `Display` is the text
    /// that messages and model files show.
    pub fn to_layer(&self) -> Option<Layer> {
        Some(match self {
            Op::Input => return None,
            Op::Dense { width, w_std, b_std } => Layer::Dense { width: *width, w_std: *w_std, b_std: *b_std },
            Op::Activation(a) => Layer::Activation(a.clone()),
            Op::Sum => Layer::Sum,
            Op::Concat => Layer::Concat,
            Op::Conv { channels, filter, stride, padding, w_std, b_std } => Layer::Conv {
                channels: *channels,
                filter: filter.clone(),
                stride: stride.clone(),
                padding: *padding,
                w_std: *w_std,
                b_std: *b_std,
            },
            Op::AvgPool { window, stride, padding } => {
                Layer::AvgPool { window: window.clone(), stride: stride.clone(), padding: *padding }
            }
            Op::GlobalAvgPool => Layer::GlobalAvgPool,
            Op::Flatten => Layer::Flatten,
        })
    }

    /// Whether the op is one of the spatial layers (conv, pooling, flatten).
    pub fn is_spatial(&self) -> bool {
        matches!(self, Op::Conv { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Flatten)
    }

    /// Whether the op has trainable parameters (Dense and Conv).
    pub fn has_params(&self) -> bool {
        matches!(self, Op::Dense { .. } | Op::Conv { .. })
    }
}

/// One node of a compiled graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Name (tensor-name prefix of a Dense node's parameters).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Indices of the input nodes (all smaller than this node's index).
    pub inputs: Vec<usize>,
    /// Output width (values per example: positions x channels).
    pub width: usize,
    /// Output shape per example (spatial extents and channels; no spatial axes for feature vectors).
    pub shape: Shape,
}

/// A network as a DAG of nodes in topological order (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Nodes; `nodes[0]` is the input, the last one the output.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Index of the output node.
    pub fn output(&self) -> usize {
        self.nodes.len() - 1
    }

    /// For each node, the nodes that read it (in increasing order, with repetitions for repeated inputs).
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.nodes.len()];
        for (v, n) in self.nodes.iter().enumerate() {
            for &u in &n.inputs {
                c[u].push(v);
            }
        }
        c
    }

    /// Whether every node reads only its predecessor (a chain).
    pub fn is_chain(&self) -> bool {
        self.nodes.iter().enumerate().skip(1).all(|(v, n)| n.inputs == [v - 1])
    }

    /// Number of Dense nodes.
    pub fn dense_count(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n.op, Op::Dense { .. })).count()
    }

    /// Number of nodes with trainable parameters (Dense and Conv).
    pub fn param_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.op.has_params()).count()
    }

    /// The minimum in-degree of the graph's neurons outside the input and first layers: for each Dense node
    /// not fed by the input directly, its fan-in; the minimum over them (Zhu, Liu & Belkin 2022's "width").
    /// None when every Dense node reads the input.
    pub fn min_in_degree(&self) -> Option<usize> {
        let consumers = self.consumers();
        (0..self.nodes.len())
            .filter(|&v| {
                matches!(self.nodes[v].op, Op::Dense { .. }) && !self.reaches_without_dense(v, true, &consumers)
            })
            .map(|v| self.nodes[self.nodes[v].inputs[0]].width)
            .min()
    }

    /// Whether node v reaches the input (`up`) or the output (`!up`) through nodes without parameters only
    /// (Dense and Conv nodes stop the walk): a Dense or Conv node is an "input" node, resp. a "readout" node, of
    /// the parameterizations when it does. `consumers` is
    /// [`Graph::consumers`].
    pub fn reaches_without_dense(&self, v: usize, up: bool, consumers: &[Vec<usize>]) -> bool {
        if !up && v == self.output() {
            return true;
        }
        let mut stack: Vec<usize> = if up { self.nodes[v].inputs.clone() } else { consumers[v].clone() };
        let mut seen = vec![false; self.nodes.len()];
        while let Some(u) = stack.pop() {
            if std::mem::replace(&mut seen[u], true) {
                continue;
            }
            match self.nodes[u].op {
                Op::Input => return up,
                Op::Dense { .. } | Op::Conv { .. } => {}
                _ => {
                    if !up && u == self.output() {
                        return true;
                    }
                    stack.extend(if up { self.nodes[u].inputs.iter() } else { consumers[u].iter() }.copied());
                }
            }
        }
        false
    }
}

/// Builder state while compiling.
struct Builder {
    nodes: Vec<Node>,
}

impl Builder {
    fn push(&mut self, name: String, op: Op, inputs: Vec<usize>) -> Result<usize> {
        let widths: Vec<usize> = inputs.iter().map(|&u| self.nodes[u].width).collect();
        let one_input = matches!(
            op,
            Op::Dense { .. }
                | Op::Activation(_)
                | Op::Conv { .. }
                | Op::AvgPool { .. }
                | Op::GlobalAvgPool
                | Op::Flatten
        );
        if one_input && inputs.len() != 1 {
            return Err(Error::Config(format!("node `{name}`: `{}` takes exactly one input", op_name(&op))));
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|&u| &self.nodes[u].shape).collect();
        // Dense on positions x channels maps the channels at every position (neural-tangents' Dense over its
        // channel axis): a 1 x 1 convolution, with the same fan-in C_in and so the same parameterizations.
        let op = match op {
            Op::Dense { width, w_std, b_std } if shapes[0].is_spatial() => {
                let ones = vec![1; shapes[0].spatial.len()];
                Op::Conv { channels: width, filter: ones.clone(), stride: ones, padding: Padding::Valid, w_std, b_std }
            }
            op => op,
        };
        let spatial_in = |what: &str| -> Result<&Shape> {
            if !shapes[0].is_spatial() {
                return Err(Error::Config(format!(
                    "node `{name}`: {what} needs spatial inputs (N x H x W x C or N x W x C), but `{}` gives \
                     {} features per example",
                    self.nodes[inputs[0]].name, shapes[0]
                )));
            }
            Ok(shapes[0])
        };
        let shape = match &op {
            Op::Input => unreachable!("the input node is created once"),
            Op::Dense { width, .. } => Shape::flat(*width),
            Op::Activation(_) => shapes[0].clone(),
            Op::Sum | Op::Concat => {
                if shapes.iter().any(|s| s.is_spatial()) {
                    let list = || -> String {
                        let v: Vec<String> = inputs
                            .iter()
                            .map(|&u| format!("`{}` ({})", self.nodes[u].name, self.nodes[u].shape))
                            .collect();
                        v.join(", ")
                    };
                    if matches!(op, Op::Concat) {
                        // neural-tangents FanInConcat(axis=-1): channels side by side, positions shared.
                        if shapes.iter().any(|s| s.spatial != shapes[0].spatial) {
                            return Err(Error::Config(format!(
                                "node `{name}`: a concat of spatial inputs joins their channels and needs equal \
                                 spatial extents, got {}",
                                list()
                            )));
                        }
                        let channels = shapes.iter().map(|s| s.channels).sum();
                        Shape::image(&shapes[0].spatial, channels)
                    } else if shapes.iter().any(|s| *s != shapes[0]) {
                        return Err(Error::Config(format!(
                            "node `{name}`: a sum needs inputs of one shape, got {}",
                            list()
                        )));
                    } else {
                        shapes[0].clone()
                    }
                } else {
                    Shape::flat(crate::layers::fan_in::width(&op, &widths, || {
                        format!("node `{name}` (inputs {})", fmt_widths(&inputs, &widths, &self.nodes))
                    })?)
                }
            }
            Op::Conv { channels, filter, stride, padding, .. } => {
                let s = spatial_in("conv")?;
                let w = Window::new(&s.spatial, filter, stride, *padding).map_err(|e| in_node(&name, s, e))?;
                Shape::image(&w.out, *channels)
            }
            Op::AvgPool { window, stride, padding } => {
                let s = spatial_in("avg_pool")?;
                let w = Window::new(&s.spatial, window, stride, *padding).map_err(|e| in_node(&name, s, e))?;
                Shape::image(&w.out, s.channels)
            }
            Op::GlobalAvgPool => Shape::flat(spatial_in("global_avg_pool")?.channels),
            Op::Flatten => Shape::flat(shapes[0].size()),
        };
        let width = shape.size();
        self.nodes.push(Node { name, op, inputs, width, shape });
        Ok(self.nodes.len() - 1)
    }

    fn chain(&mut self, layers: &[Layer], from: usize, prefix: &str) -> Result<usize> {
        let mut cur = from;
        for (i, l) in layers.iter().enumerate() {
            cur = self.layer(l, cur, format!("{prefix}{i}"))?;
        }
        Ok(cur)
    }

    fn layer(&mut self, l: &Layer, from: usize, name: String) -> Result<usize> {
        match l {
            Layer::Dense { width, w_std, b_std } => {
                self.push(name, Op::Dense { width: *width, w_std: *w_std, b_std: *b_std }, vec![from])
            }
            Layer::Activation(a) => self.push(name, Op::Activation(a.clone()), vec![from]),
            Layer::Residual(block) => {
                let out = self.chain(block, from, &format!("{name}."))?;
                self.push(name, Op::Sum, vec![from, out])
            }
            Layer::Sum | Layer::Concat => {
                Err(Error::parse(l.to_string(), "`sum` and `concat` need named inputs (node(...))"))
            }
            Layer::Node { name: n, .. } => {
                Err(Error::parse(n.clone(), "a node(...) cannot appear inside a layer list"))
            }
            Layer::Conv { channels, filter, stride, padding, w_std, b_std } => self.push(
                name,
                Op::Conv {
                    channels: *channels,
                    filter: filter.clone(),
                    stride: stride.clone(),
                    padding: *padding,
                    w_std: *w_std,
                    b_std: *b_std,
                },
                vec![from],
            ),
            Layer::AvgPool { window, stride, padding } => self.push(
                name,
                Op::AvgPool { window: window.clone(), stride: stride.clone(), padding: *padding },
                vec![from],
            ),
            Layer::GlobalAvgPool => self.push(name, Op::GlobalAvgPool, vec![from]),
            Layer::Flatten => self.push(name, Op::Flatten, vec![from]),
        }
    }
}

fn in_node(name: &str, s: &Shape, e: Error) -> Error {
    Error::Config(format!("node `{name}` on {s}: {e}"))
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Input => "input",
        Op::Dense { .. } => "dense",
        Op::Activation(_) => "an activation",
        Op::Sum => "sum",
        Op::Concat => "concat",
        Op::Conv { .. } => "conv",
        Op::AvgPool { .. } => "avg_pool",
        Op::GlobalAvgPool => "global_avg_pool",
        Op::Flatten => "flatten",
    }
}

fn fmt_widths(inputs: &[usize], widths: &[usize], nodes: &[Node]) -> String {
    inputs.iter().zip(widths).map(|(&u, w)| format!("`{}` ({w})", nodes[u].name)).collect::<Vec<_>>().join(", ")
}

impl Architecture {
    /// Compile into a [`Graph`] for inputs of dimension `input_dim`, checking names, cycles, widths and that
    /// every node reaches the output. Errors name the node.
    pub fn graph(&self, input_dim: usize) -> Result<Graph> {
        self.graph_for(&Shape::flat(input_dim))
    }

    /// [`Architecture::graph`] for inputs of the given shape per example (spatial for conv and pooling layers).
    pub fn graph_for(&self, input: &Shape) -> Result<Graph> {
        self.validate()?;
        if input.size() == 0 {
            return Err(Error::Config(if input.is_spatial() {
                format!("the input shape {input} has no values")
            } else {
                "input dimension must be positive".to_string()
            }));
        }
        let mut b = Builder {
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input,
                inputs: vec![],
                width: input.size(),
                shape: input.clone(),
            }],
        };
        if !matches!(self.layers[0], Layer::Node { .. }) {
            b.chain(&self.layers, 0, "")?;
            return Ok(Graph { nodes: b.nodes });
        }
        // Named DAG: resolve names, then place nodes in a topological order (stable: the given order where
        // the inputs allow), detecting cycles and unknown names.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            if let Layer::Node { name, .. } = l {
                if index.insert(name.as_str(), i).is_some() {
                    return Err(Error::Config(format!("node `{name}` is defined twice")));
                }
            }
        }
        let items: Vec<(&String, &Layer, &Vec<String>)> = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::Node { name, op, inputs } => (name, op.as_ref(), inputs),
                _ => unreachable!("validate() rejects mixed lists"),
            })
            .collect();
        for (name, _, inputs) in &items {
            for i in inputs.iter() {
                if i != "input" && !index.contains_key(i.as_str()) {
                    return Err(Error::Config(format!("node `{name}` reads `{i}`, which is not a node (nor `input`)")));
                }
            }
        }
        let mut placed: HashMap<&str, usize> = HashMap::from([("input", 0usize)]);
        let mut done = vec![false; items.len()];
        let output = items.len() - 1;
        while done.iter().any(|d| !d) {
            let next =
                (0..items.len()).find(|&i| !done[i] && items[i].2.iter().all(|s| placed.contains_key(s.as_str())));
            let Some(i) = next else {
                let stuck: Vec<&str> = (0..items.len()).filter(|&i| !done[i]).map(|i| items[i].0.as_str()).collect();
                return Err(Error::Config(format!("the graph has a cycle through nodes {}", stuck.join(", "))));
            };
            if i == output && done.iter().filter(|d| !**d).count() > 1 {
                // `find` takes the lowest ready index, so the output (the highest) comes up only when every node
                // still waiting reads the output or sits on a cycle: neither can precede the output.
                let waiting: Vec<&str> =
                    (0..items.len()).filter(|&j| !done[j] && j != output).map(|j| items[j].0.as_str()).collect();
                return Err(Error::Config(format!(
                    "nodes {} read the output `{}` (the last node) or form a cycle; the output must come last",
                    waiting.join(", "),
                    items[output].0
                )));
            }
            place(&mut b, &items[i], &mut placed)?;
            done[i] = true;
        }
        let g = Graph { nodes: b.nodes };
        // Every node must reach the output.
        let mut live = vec![false; g.nodes.len()];
        live[g.output()] = true;
        for v in (0..g.nodes.len()).rev() {
            if live[v] {
                for &u in &g.nodes[v].inputs {
                    live[u] = true;
                }
            }
        }
        if let Some(v) = (0..g.nodes.len()).find(|&v| !live[v]) {
            return Err(Error::Config(format!(
                "node `{}` does not lead to the output `{}` (the last node is the output)",
                g.nodes[v].name,
                g.nodes[g.output()].name
            )));
        }
        Ok(g)
    }
}

/// Place one named node (its inputs already placed).
fn place<'a>(
    b: &mut Builder,
    item: &(&'a String, &Layer, &Vec<String>),
    placed: &mut HashMap<&'a str, usize>,
) -> Result<()> {
    let (name, op, inputs) = *item;
    let ins: Vec<usize> = inputs.iter().map(|s| placed[s.as_str()]).collect();
    let v = match op {
        Layer::Sum => b.push(name.clone(), Op::Sum, ins)?,
        Layer::Concat => b.push(name.clone(), Op::Concat, ins)?,
        Layer::Residual(block) => {
            if ins.len() != 1 {
                return Err(Error::Config(format!("node `{name}`: a residual block takes exactly one input")));
            }
            let out = b.chain(block, ins[0], &format!("{name}."))?;
            b.push(name.clone(), Op::Sum, vec![ins[0], out])?
        }
        other => {
            if ins.len() != 1 {
                return Err(Error::Config(format!(
                    "node `{name}`: `{other}` takes exactly one input, got {}",
                    ins.len()
                )));
            }
            b.layer(other, ins[0], name.clone())?
        }
    };
    placed.insert(name.as_str(), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Parameterization;

    fn g(s: &str, d: usize) -> Result<Graph> {
        Architecture::parse(s, Parameterization::Ntk)?.graph(d)
    }

    #[test]
    fn residual_compiles_to_fan_out_and_sum() {
        let gr =
            g("dense(32,w_std=1.3,b_std=0.2),residual(relu,dense(32,w_std=1.3,b_std=0.2)),relu,dense(1)", 5).unwrap();
        let names: Vec<&str> = gr.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["input", "0", "1.0", "1.1", "1", "2", "3"]);
        assert_eq!(gr.nodes[4].op, Op::Sum);
        assert_eq!(gr.nodes[4].inputs, vec![1, 3]);
        assert!(!gr.is_chain());
        assert_eq!(gr.min_in_degree(), Some(32));
        assert!(g("dense(3),relu,dense(1)", 2).unwrap().is_chain());
        // Text round trip.
        let a = Architecture::parse(
            "dense(4),residual(relu,dense(4),residual(tanh,dense(4))),dense(1)",
            Parameterization::Ntk,
        )
        .unwrap();
        assert_eq!(Architecture::parse(&a.to_string(), Parameterization::Ntk).unwrap(), a);
    }

    #[test]
    fn dag_nodes_resolve_in_any_order() {
        let s = "node(b,dense(4),a),node(a,dense(6),input),node(s,concat,a,b),node(r,relu,s),node(out,dense(1),r)";
        let gr = g(s, 3).unwrap();
        let names: Vec<&str> = gr.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["input", "a", "b", "s", "r", "out"]);
        assert_eq!(gr.nodes[3].width, 10);
        let a = Architecture::parse(s, Parameterization::Ntk).unwrap();
        assert_eq!(Architecture::parse(&a.to_string(), Parameterization::Ntk).unwrap(), a);
    }

    #[test]
    fn graph_errors_name_the_node() {
        let cases = [
            ("node(a,dense(4),b),node(b,dense(4),a),node(o,dense(1),b)", "cycle"),
            ("node(a,dense(4),input),node(o,dense(1),zz)", "zz"),
            ("node(a,dense(4),input),node(b,dense(5),input),node(s,sum,a,b)", "equal width"),
            ("node(a,dense(4),input),node(a,dense(5),a),node(o,dense(1),a)", "twice"),
            ("node(a,dense(4),input),node(dead,dense(5),a),node(o,dense(1),a)", "dead"),
            ("node(a,dense(4),input,input),node(o,dense(1),a)", "exactly one input"),
            ("node(a,dense(4),input),node(b,relu,o),node(o,dense(1),a)", "read the output"),
        ];
        for (s, want) in cases {
            let e = g(s, 3).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
        assert!(Architecture::parse("dense(4),sum,dense(1)", Parameterization::Ntk).is_err());
        assert!(Architecture::parse("dense(4),node(a,relu,input)", Parameterization::Ntk).is_err());
        assert!(Architecture::parse("residual()", Parameterization::Ntk).is_err());
        assert!(Architecture::parse("node(input,relu,input)", Parameterization::Ntk).is_err());
    }

    #[test]
    fn toml_graph_form() {
        let doc = r#"
parameterization = "standard"
[[nodes]]
name = "h1"
op = "dense(8, b_std=0.1)"
inputs = ["input"]
[[nodes]]
name = "a1"
op = "relu"
[[nodes]]
name = "skip"
op = "dense(8)"
inputs = ["input"]
[[nodes]]
name = "s"
op = "sum"
inputs = ["a1", "skip"]
[[nodes]]
name = "out"
op = "dense(1)"
"#;
        let a = Architecture::from_toml_str(doc, Parameterization::Ntk).unwrap();
        assert_eq!(a.parameterization, Parameterization::Standard);
        let gr = a.graph(3).unwrap();
        assert_eq!(gr.nodes[gr.output()].name, "out");
        assert_eq!(gr.nodes[4].inputs, vec![2, 3]);
        let bad = "[[nodes]]\nname = \"h\"\nop = \"dense(0)\"\n";
        assert!(Architecture::from_toml_str(bad, Parameterization::Ntk).unwrap_err().to_string().contains("dense(0)"));
    }
}
