//! End-to-end tests of `ntklab train` on tiny configs: the run folder, parseable records that match the
//! library, divergence as a normal outcome, and clean failures on bad configs.

use std::path::{Path, PathBuf};
use std::process::Command;

use ntklab::train::Record;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ntklab"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
}

const TINY: &str = r#"
seed = 1

[data]
name = "teacher"
n = 16
d = 3
n_test = 8
noise = 0.05

[model]
arch = "dense(32,b_std=0.1),relu,dense(1)"

[optimizer]
kind = "gd"
lr = 1.0
steps = 30

[probes]
every = 10
which = ["all"]
hessian_top_k = 2
ntk_subset = 16
"#;

fn train(cfg: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin().args(["train", "--config"]).arg(cfg).arg("--out").arg(out).args(extra).output().unwrap()
}

fn records(out: &Path) -> Vec<Record> {
    std::fs::read_to_string(out.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn writes_a_complete_run_folder() {
    let d = tmp("ok");
    let cfg = d.join("run.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let out = d.join("run");
    let o = train(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = [
        ".ntklab-output",
        "config.toml",
        "linearized.png",
        "linearized.svg",
        "loss.png",
        "loss.svg",
        "model.safetensors",
        "model_init.safetensors",
        "model_linearized.safetensors",
        "ntk_change.png",
        "ntk_change.svg",
        "provenance.json",
        "records.jsonl",
        "report.html",
        "report.md",
        "sharpness.png",
        "sharpness.svg",
        "summary.json",
    ];
    assert_eq!(files_in(&out), want);
    // One page with all four plots inlined and no external resource.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for stem in ["loss", "sharpness", "ntk_change", "linearized"] {
        let at = html.find(&format!("<figure id=\"plot-{stem}\"><svg")).unwrap_or_else(|| panic!("{stem}"));
        assert!(html[at..].contains("</svg>"));
    }
    for bad in ["<script", "<link", "<img", "src="] {
        assert!(!html.contains(bad), "{bad}");
    }
    assert!(!d.join("run.partial").exists());
    assert_eq!(std::fs::read_to_string(out.join("config.toml")).unwrap(), TINY);
    let recs = records(&out);
    assert_eq!(recs.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 10, 20, 30]);
    assert!(recs
        .iter()
        .all(|r| r.sharpness.is_some() && r.ntk_max.is_some() && r.lin_distance.is_some() && r.test_loss.is_some()));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"]["kind"], "completed");
    assert_eq!(summary["steps"], 30);
    // The saved final model reproduces the last recorded loss.
    let net = ntklab::net::load_mlp(&out.join("model.safetensors"), &Default::default()).unwrap();
    let run = ntklab::train::RunConfig::from_toml_str(TINY).unwrap().resolve(Path::new(".")).unwrap();
    let f = net.forward(run.data.x.as_ref()).unwrap();
    let l = ntklab::train::Loss::Mse.value(f.as_ref(), run.data.y.as_ref()).unwrap();
    assert!((l - recs[3].loss).abs() < 1e-10 * l, "{l} vs {}", recs[3].loss);
    // Same config, same records (byte for byte), whatever the thread count; an existing folder needs --force.
    let o = train(&cfg, &out, &[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--force"));
    let out1 = d.join("run1");
    let o = bin().args(["--threads", "1", "train", "--config"]).arg(&cfg).arg("--out").arg(&out1).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("records.jsonl")).unwrap(), std::fs::read(out1.join("records.jsonl")).unwrap());
    let o = train(&cfg, &out, &["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn divergence_is_reported_not_a_crash() {
    let d = tmp("div");
    let cfg = d.join("run.toml");
    std::fs::write(&cfg, TINY.replace("lr = 1.0", "lr = 1e6").replace("which = [\"all\"]", "which = [\"sharpness\"]"))
        .unwrap();
    let out = d.join("run");
    let o = train(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("diverged at step"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"]["kind"], "diverged");
    assert!(!records(&out).is_empty());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn sgd_and_flow_runs_from_array_files() {
    let d = tmp("arrays");
    let x = ntklab::data::synthetic::gaussian(12, 2, 1);
    let y = faer::Mat::from_fn(12, 1, |i, _| x[(i, 0)].sin());
    ntklab::data::write_npy_mat(&d.join("x.npy"), x.as_ref()).unwrap();
    ntklab::data::write_npy_mat(&d.join("y.npy"), y.as_ref()).unwrap();
    for (tag, opt) in [
        (
            "sgd",
            "kind = \"sgd\"\nbatch = 4\nlr = 0.5\nsteps = 24\nschedule = \"step\"\nstep_every = 12\nstep_factor = 0.5",
        ),
        ("flow", "kind = \"flow\"\nlr = 0.5\nsteps = 20\nrtol = 1e-8"),
    ] {
        let text = format!(
            "[data]\nx = \"x.npy\"\ny = \"y.npy\"\n[model]\narch = \"dense(16,b_std=0.1),tanh,dense(1)\"\n[optimizer]\n{opt}\n[probes]\nevery = 4\nwhich = [\"linearized\", \"pl\"]\n"
        );
        let cfg = d.join(format!("{tag}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = d.join(tag);
        let o = train(&cfg, &out, &[]);
        assert!(o.status.success(), "{tag}: {}", String::from_utf8_lossy(&o.stderr));
        let recs = records(&out);
        assert!(recs.last().unwrap().loss < recs[0].loss, "{tag}");
        assert_eq!(recs.iter().any(|r| r.ode.is_some()), tag == "flow");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_configs_fail_clearly_without_a_run_folder() {
    let d = tmp("bad");
    let cases = [
        (TINY.replace("lr = 1.0", "lr = 0.0"), "optimizer.lr"),
        (TINY.replace("lr = 1.0", "learning_rate = 1.0"), "learning_rate"),
        (TINY.replace("kind = \"gd\"", "kind = \"sgd\"\nbatch = 17"), "optimizer.batch"),
        (TINY.replace("\"teacher\"", "\"imagenet\""), "imagenet"),
        (TINY.replace("which = [\"all\"]", "which = [\"curvature\"]"), "curvature"),
        (TINY.replace("[model]", "[modle]"), "modle"),
        (
            TINY.replace(
                "name = \"teacher\"\nn = 16\nd = 3\nn_test = 8\nnoise = 0.05",
                "x = \"missing.npy\"\ny = \"y.npy\"",
            ),
            "missing.npy",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let cfg = d.join(format!("bad{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = d.join(format!("out{i}"));
        let o = train(&cfg, &out, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "case {i} should fail");
        assert!(err.contains(needle), "case {i}: stderr lacks `{needle}`: {err}");
        assert!(!out.exists() && !d.join(format!("out{i}.partial")).exists(), "case {i} left a folder");
    }
    let o = train(&d.join("nope.toml"), &d.join("x"), &[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nope.toml"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn f32_training_tracks_f64_with_all_probes() {
    // The same run in f32 lanes: every record within f32 accuracy of the f64 run (30 GD steps at lr 1 amplify
    // rounding by the conditioning of the problem; 1e-3 relative leaves a wide margin over the ~1e-6 seen).
    let d = tmp("f32");
    let c64 = d.join("c64.toml");
    std::fs::write(&c64, TINY).unwrap();
    let c32 = d.join("c32.toml");
    std::fs::write(&c32, TINY.replace("[model]\n", "[model]\nprecision = \"f32\"\n")).unwrap();
    assert!(train(&c64, &d.join("r64"), &[]).status.success());
    let o = train(&c32, &d.join("r32"), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (records(&d.join("r64")), records(&d.join("r32")));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x.loss - y.loss).abs() <= 1e-3 * x.loss, "loss {} vs {}", x.loss, y.loss);
        let (s, t) = (x.sharpness.unwrap(), y.sharpness.unwrap());
        assert!((s - t).abs() <= 1e-3 * s, "sharpness {s} vs {t}");
        let (s, t) = (x.ntk_max.unwrap(), y.ntk_max.unwrap());
        assert!((s - t).abs() <= 1e-3 * s, "ntk_max {s} vs {t}");
    }
    let bad = d.join("bad.toml");
    std::fs::write(&bad, TINY.replace("[model]\n", "[model]\nprecision = \"f16\"\n")).unwrap();
    let o = train(&bad, &d.join("rb"), &[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("model.precision"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn force_replaces_only_ntklab_run_folders() {
    // `--out . --force` once deleted everything in the working directory: now the working directory, its
    // parents and any folder without ntklab's marker are refused, and nothing is touched.
    let d = tmp("force");
    let cfg = d.join("c.toml");
    std::fs::write(&cfg, TINY).unwrap();
    std::fs::write(d.join("precious.txt"), "keep me").unwrap();
    let o = bin().args(["train", "--config", "c.toml", "--out", ".", "--force"]).current_dir(&d).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("working directory"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(d.join("precious.txt")).unwrap(), "keep me");
    let o = bin().args(["train", "--config", "c.toml", "--out", "..", "--force"]).current_dir(&d).output().unwrap();
    assert!(!o.status.success());
    // A folder of the user's: refused.
    let mine = d.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    let o = train(&cfg, &mine, &["--force"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not created by ntklab"));
    assert!(mine.join("notes.txt").is_file());
    // A previous run: replaced.
    let run = d.join("run");
    assert!(train(&cfg, &run, &[]).status.success());
    assert!(run.join(".ntklab-output").is_file());
    assert!(train(&cfg, &run, &["--force"]).status.success());
    assert!(run.join("records.jsonl").is_file());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn an_impossible_data_size_is_refused_before_allocating() {
    let d = tmp("bigdata");
    let cfg = d.join("c.toml");
    std::fs::write(&cfg, TINY.replace("n = 16\n", "n = 1000000000\n").replace("d = 3\n", "d = 1000\n")).unwrap();
    let o = train(&cfg, &d.join("run"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("would need") && !err.contains("panicked"), "{err}");
    assert!(!d.join("run").exists() && !d.join("run.partial").exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_pytorch_initialization_trains_step_for_step_like_pytorch() {
    // tools/make_torch_gd_fixture.py: nn.Sequential(Linear(3,16), Tanh, Linear(16,1)) in f64, 25 steps of
    // torch.optim.SGD at lr 0.3 on (1/N) sum 0.5 (f - y)^2. Standard parameterization: the trained variables are
    // PyTorch's weights, so both runs take the same steps; they agree to rounding (1e-10 leaves room for the
    // different summation orders over 25 steps).
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_gd");
    let d = tmp("torch");
    let cfg = d.join("run.toml");
    let p = |f: &str| fx.join(f).display().to_string();
    std::fs::write(
        &cfg,
        format!(
            "[data]\nx = \"{}\"\ny = \"{}\"\n[model]\narch = \"dense(16,b_std=1),tanh,dense(1,b_std=1)\"\n\
             parameterization = \"standard\"\ninit = \"{}\"\ncheckpoint_every = 10\n[optimizer]\nkind = \"gd\"\n\
             lr = 0.3\nsteps = 25\n[probes]\nevery = 5\n",
            p("x.npy"),
            p("y.npy"),
            p("init.safetensors")
        ),
    )
    .unwrap();
    let out = d.join("run");
    let o = train(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let arch = ntklab::kernel::Architecture::parse(
        "dense(16,b_std=1),tanh,dense(1,b_std=1)",
        ntklab::kernel::Parameterization::Standard,
    )
    .unwrap();
    let opts = ntklab::net::LoadOptions {
        layers: Some(arch.layers.clone()),
        parameterization: Some(ntklab::kernel::Parameterization::Standard),
        ..Default::default()
    };
    let load = |path: &Path| ntklab::net::load_mlp(path, &opts).unwrap();
    let (ours, theirs, init) =
        (load(&out.join("model.safetensors")), load(&fx.join("final.safetensors")), load(&fx.join("init.safetensors")));
    let moved = ours.params().iter().zip(init.params()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(moved > 1e-3, "training moved the weights by {moved}");
    let diff = ours.params().iter().zip(theirs.params()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-10, "ntklab vs PyTorch after 25 steps: max |dw| = {diff:e}");
    assert_eq!(load(&out.join("model_init.safetensors")).params(), init.params());
    // Checkpoints at steps 10 and 20.
    let mut ck: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    ck.sort();
    assert_eq!(ck, ["step_00000010.safetensors", "step_00000020.safetensors"]);
    // A file whose shapes do not fit the architecture is refused, naming the key.
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("dense(16,", "dense(8,")).unwrap();
    let o = train(&cfg, &d.join("bad"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("model.init"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
