//! Convolutional networks end to end: PyTorch CNN state dicts (tools/make_torch_cnn_fixture.py) load with their
//! outputs and gradients, and `init --input-shape`, `ntk`, `hessian` and `train` take N x H x W x C images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use faer::Mat;
use ntklab::kernel::{Architecture, Parameterization, Shape};
use ntklab::net::io::effective_tensors;
use ntklab::net::{load_mlp, LoadOptions, Mlp, NtkOutputs};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ntklab"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_cnn")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-conv-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn max_abs_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    (a - b).norm_max()
}

/// (ntklab arch for the PyTorch model, tag of the fixture files).
const MODELS: [(&str, &str); 2] = [
    ("conv(4,3x3,padding=same,b_std=1),tanh,conv(5,2x2,stride=2,b_std=1),relu,flatten,dense(2,b_std=1)", "2d"),
    ("conv(3,3,b_std=1),tanh,avg_pool(2,stride=2),flatten,dense(1,b_std=1)", "1d"),
];

#[test]
fn pytorch_cnns_give_pytorchs_outputs_and_gradients() {
    // Standard parameterization: the raw variables are PyTorch's parameters, so d sum(f) / d theta read back
    // through the PyTorch layout (effective tensors of a network whose parameters are the gradient) must equal
    // PyTorch's .grad tensors. f64 on both sides; sums of at most 45 terms: 1e-12.
    for (arch, tag) in MODELS {
        let (x, shape) = ntklab::data::read_examples(&fixtures().join(format!("x{tag}.npy"))).unwrap();
        let shape = shape.expect("image fixture");
        let layers = Architecture::parse(arch, Parameterization::Standard).unwrap().layers;
        let opts = LoadOptions {
            layers: Some(layers),
            parameterization: Some(Parameterization::Standard),
            input_shape: Some(shape.clone()),
            ..Default::default()
        };
        let net = load_mlp(&fixtures().join(format!("cnn{tag}.safetensors")), &opts).unwrap();
        let f = net.forward(x.as_ref()).unwrap();
        let want = ntklab::data::read_matrix(&fixtures().join(format!("f{tag}.npy"))).unwrap();
        assert!(max_abs_diff(&f, &want) < 1e-12 * want.norm_max(), "{tag}: outputs");
        let ones = Mat::<f64>::from_fn(f.nrows(), f.ncols(), |_, _| 1.0);
        let g = net.vjp(x.as_ref(), ones.as_ref()).unwrap();
        let mut as_net: Mlp = net.clone();
        as_net.set_params(&g).unwrap();
        let grads = load_mlp(&fixtures().join(format!("g{tag}.safetensors")), &opts).unwrap();
        let theirs = effective_tensors(&grads);
        for ((name, ours), (tname, t)) in effective_tensors(&as_net).iter().zip(&theirs) {
            assert_eq!(name, tname);
            let e = ours.data.iter().zip(&t.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let s = t.data.iter().map(|v| v.abs()).fold(0.0, f64::max);
            assert!(e < 1e-12 * s.max(1.0), "{tag} {name}: gradient differs by {e:e}");
        }
    }
}

#[test]
fn init_ntk_hessian_and_train_take_images() {
    let d = tmp("cli");
    let s = |p: &Path| p.display().to_string();
    let x = fixtures().join("x2d.npy");
    let model = d.join("m.safetensors");
    let arch = "conv(8,3x3,padding=same,w_std=1.4,b_std=0.1),relu,avg_pool(2x2,stride=2),conv(8,3x3,padding=circular),\
                tanh,global_avg_pool,dense(2,b_std=0.1)";
    ok(&run(&["init", "--arch", arch, "--input-shape", "6x6x3", "--seed", "3", "--out", &s(&model)]));
    // ntk: the CLI's kernel is the library's, symmetric with a non-negative diagonal.
    let k = d.join("k.npy");
    ok(&run(&["ntk", "--model", &s(&model), "--x", &s(&x), "--out", &s(&k)]));
    let kc = ntklab::data::read_matrix(&k).unwrap();
    let net = load_mlp(&model, &LoadOptions::default()).unwrap();
    assert_eq!(net.input_shape, Shape::image(&[6, 6], 3));
    let (xm, _) = ntklab::data::read_examples(&x).unwrap();
    let kl = net.empirical_ntk(xm.as_ref(), None, NtkOutputs::Trace).unwrap();
    assert_eq!(max_abs_diff(&kc, &kl), 0.0);
    assert!((0..5).all(|i| kc[(i, i)] > 0.0 && (0..5).all(|j| kc[(i, j)] == kc[(j, i)])));
    // hessian: runs and reports eigenvalues.
    let y = fixtures().join("f2d.npy");
    let o = run(&["hessian", "--model", &s(&model), "--x", &s(&x), "--y", &s(&y), "--top", "2", "--max-iter", "40"]);
    ok(&o);
    // Examples of another shape are refused, naming both shapes.
    let o =
        run(&["ntk", "--model", &s(&model), "--x", &s(&fixtures().join("x1d.npy")), "--out", &s(&d.join("k2.npy"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("20 x 2") && err.contains("6 x 6 x 3"), "{err}");
    // train on images: the loss falls and the saved model keeps the input shape.
    let cfg = d.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "seed = 2\n[data]\nx = \"{}\"\ny = \"{}\"\n[model]\narch = \"{arch}\"\n[optimizer]\nkind = \"gd\"\nlr = 0.5\n\
             steps = 20\n[probes]\nevery = 10\nwhich = [\"ntk-max\", \"ntk-change\", \"sharpness\", \"linearized\"]\nhessian_top_k = 1\n",
            s(&x),
            s(&y)
        ),
    )
    .unwrap();
    let out = d.join("run");
    ok(&bin().args(["train", "--config"]).arg(&cfg).arg("--out").arg(&out).output().unwrap());
    let recs: Vec<ntklab::train::Record> = std::fs::read_to_string(out.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(recs.last().unwrap().loss < 0.8 * recs[0].loss, "{} -> {}", recs[0].loss, recs.last().unwrap().loss);
    let trained = load_mlp(&out.join("model.safetensors"), &LoadOptions::default()).unwrap();
    assert_eq!(trained.input_shape, Shape::image(&[6, 6], 3));
    std::fs::remove_dir_all(&d).ok();
}
