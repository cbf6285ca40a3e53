//! Mutation test of every reader: valid .npy, .npz, .csv, .safetensors model files and TOML architecture and
//! training configs are corrupted at random (bit flips, byte overwrites with extreme values, truncation,
//! duplication, numbers in headers replaced by huge ones) and read back. Each read must return (Ok or a clear
//! Err), never panic, and the process must stay within a memory bound: a huge declared shape is refused
//! before anything is allocated for it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ntklab::data::io::{read_csv, read_npy, read_npz, write_npy_mat, write_npz, Array};
use ntklab::kernel::{Architecture, Parameterization};
use ntklab::net::{load_mlp, save_mlp, LoadOptions, Mlp, Precision};
use ntklab::train::RunConfig;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-mutation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One random corruption of `bytes`.
fn mutate(bytes: &[u8], r: &mut Xoshiro256PlusPlus) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b.is_empty() {
        return b;
    }
    match r.random_range(0..6) {
        0 => {
            for _ in 0..r.random_range(1..8) {
                let i = r.random_range(0..b.len());
                b[i] ^= 1 << r.random_range(0..8);
            }
        }
        1 => {
            let keep = r.random_range(0..b.len());
            b.truncate(keep);
        }
        2 => {
            let i = r.random_range(0..b.len());
            let v: u8 = [0x00, 0xff, 0x7f, 0x80, b'9', b'-', b'e'][r.random_range(0..7)];
            for x in b.iter_mut().skip(i).take(r.random_range(1..16)) {
                *x = v;
            }
        }
        3 => {
            let (i, j) = (r.random_range(0..b.len()), r.random_range(0..b.len()));
            let (lo, hi) = (i.min(j), i.max(j));
            let chunk = b[lo..hi].to_vec();
            b.splice(hi..hi, chunk);
        }
        4 => {
            // A decimal number in a text header (npy dict, safetensors JSON, TOML) made huge.
            let text: Vec<usize> =
                b.windows(1).enumerate().filter(|(_, w)| w[0].is_ascii_digit()).map(|(i, _)| i).collect();
            if let Some(&i) = text.get(r.random_range(0..text.len().max(1)).min(text.len().saturating_sub(1))) {
                let huge = ["999999999999", "18446744073709551615", "4294967296", "1e308", "-1"][r.random_range(0..5)];
                b.splice(i..i + 1, huge.bytes());
            }
        }
        _ => {
            let i = r.random_range(0..b.len());
            let k = r.random_range(1..4);
            for x in b.iter_mut().skip(i).take(k) {
                *x = r.random();
            }
        }
    }
    b
}

/// Peak resident memory of this process so far, in bytes (Linux), else 0.
fn max_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn check(name: &str, case: usize, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!("{name}: mutated input #{case} made a reader panic");
    }
}

#[test]
fn corrupted_inputs_give_errors_not_panics() {
    let d = tmp();
    let mut r = Xoshiro256PlusPlus::seed_from_u64(2026);
    // Seeds of each format.
    let m = faer::Mat::<f64>::from_fn(7, 3, |i, j| (i as f64) - 0.5 * j as f64);
    write_npy_mat(&d.join("seed.npy"), m.as_ref()).unwrap();
    let a = Array::from_mat(m.as_ref());
    write_npz(&d.join("seed.npz"), &[("x", &a), ("y", &a)]).unwrap();
    std::fs::write(d.join("seed.csv"), "a,b,c\n1,2,3\n4.5,-6,7e-3\n8,9,10\n").unwrap();
    let chain =
        Mlp::init(&Architecture::parse("dense(6,b_std=0.1),tanh,dense(2)", Parameterization::Ntk).unwrap(), 3, 1.0, 1)
            .unwrap();
    save_mlp(&chain, &d.join("seed.safetensors"), Precision::F64).unwrap();
    let dag = Mlp::init(
        &Architecture::parse(
            "node(h,dense(4),input),node(a,relu,h),node(s,dense(4),input),node(t,sum,a,s),node(o,dense(1),t)",
            Parameterization::Ntk,
        )
        .unwrap(),
        3,
        1.0,
        2,
    )
    .unwrap();
    save_mlp(&dag, &d.join("dag.safetensors"), Precision::F64).unwrap();
    save_mlp(&dag, &d.join("dag.npz"), Precision::F32).unwrap();
    let arch_toml = "parameterization = \"standard\"\n[[nodes]]\nname = \"h\"\nop = \"dense(8, b_std=0.1)\"\ninputs = [\"input\"]\n[[nodes]]\nname = \"a\"\nop = \"relu\"\n[[nodes]]\nname = \"o\"\nop = \"dense(1)\"\n";
    let train_toml = "seed = 1\n[data]\nname = \"teacher\"\nn = 16\nd = 3\n[model]\narch = \"dense(32,b_std=0.1),residual(relu,dense(32)),dense(1)\"\nprecision = \"f32\"\n[optimizer]\nkind = \"momentum\"\nlr = 0.5\nsteps = 10\n[probes]\nevery = 5\nwhich = [\"sharpness\"]\n";
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("npy", std::fs::read(d.join("seed.npy")).unwrap()),
        ("npz", std::fs::read(d.join("seed.npz")).unwrap()),
        ("csv", std::fs::read(d.join("seed.csv")).unwrap()),
        ("safetensors", std::fs::read(d.join("seed.safetensors")).unwrap()),
        ("safetensors", std::fs::read(d.join("dag.safetensors")).unwrap()),
        ("npz-model", std::fs::read(d.join("dag.npz")).unwrap()),
        ("arch-toml", arch_toml.as_bytes().to_vec()),
        ("train-toml", train_toml.as_bytes().to_vec()),
    ];
    let per_seed = 1500;
    let mut errors = 0usize;
    let mut total = 0usize;
    for (kind, bytes) in &seeds {
        for case in 0..per_seed {
            let data = mutate(bytes, &mut r);
            total += 1;
            let ext = match *kind {
                "npz-model" => "npz",
                "arch-toml" | "train-toml" => "toml",
                k => k,
            };
            let path: &Path = &d.join(format!("m.{ext}"));
            std::fs::write(path, &data).unwrap();
            let mut failed = false;
            check(kind, case, || {
                failed = match *kind {
                    "npy" => read_npy(path).is_err(),
                    "npz" => read_npz(path).is_err(),
                    "csv" => read_csv(path).is_err(),
                    "safetensors" | "npz-model" => load_mlp(path, &LoadOptions::default()).is_err(),
                    "arch-toml" => match std::str::from_utf8(&data) {
                        Ok(t) => {
                            Architecture::from_toml_str(t, Parameterization::Ntk).and_then(|a| a.graph(3)).is_err()
                        }
                        Err(_) => true,
                    },
                    _ => match std::str::from_utf8(&data) {
                        // Parsing and resolving (data generation, network allocation) of a config, not training.
                        Ok(t) => RunConfig::from_toml_str(t).and_then(|c| c.resolve(&d)).is_err(),
                        Err(_) => true,
                    },
                };
            });
            errors += failed as usize;
        }
    }
    // The mutations must mostly break the files (else this test exercises nothing) ...
    assert!(errors > total / 2, "only {errors} of {total} mutated inputs were rejected");
    // ... and no declared size may have been allocated on trust: the whole run stays far below 2 GiB.
    let rss = max_rss();
    assert!(rss < 2 << 30, "peak memory {rss} bytes");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_small_file_declaring_a_huge_network_is_refused_before_allocating() {
    // 1 KB of tensors whose metadata claims dense(15000),relu,dense(15000) on 15000 inputs (450 M parameters,
    // 3.4 GB): refused from the declared shapes, before the parameter vector exists.
    let d = std::env::temp_dir().join(format!("ntklab-huge-claim-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let small =
        Mlp::init(&Architecture::parse("dense(8),relu,dense(8)", Parameterization::Ntk).unwrap(), 8, 1.0, 1).unwrap();
    let path = d.join("m.safetensors");
    save_mlp(&small, &path, Precision::F64).unwrap();
    let opts = LoadOptions {
        layers: Some(Architecture::parse("dense(15000),relu,dense(15000)", Parameterization::Ntk).unwrap().layers),
        ..Default::default()
    };
    let before = max_rss();
    let t0 = std::time::Instant::now();
    let e = load_mlp(&path, &opts).unwrap_err().to_string();
    assert!(e.contains("0.weight") && e.contains("[15000, 8]"), "{e}");
    assert!(t0.elapsed().as_secs_f64() < 1.0);
    assert!(max_rss().saturating_sub(before) < 100 << 20, "the refusal allocated {} bytes", max_rss() - before);
    std::fs::remove_dir_all(&d).ok();
}
