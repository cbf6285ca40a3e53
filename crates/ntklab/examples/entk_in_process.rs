//! Times the empirical NTK in one process, as the Python peers in `bench/entk_cnn_bench.py` are timed: calls to
//! warm up for at least 0.5 s (thread pool, first-touch pages, and the clock of cores that were idle), then
//! `repeats` timed calls. Also writes the
//! kernel, so the bench can check it against the CLI's.
//!
//! Usage: cargo run --release --example entk_in_process -- MODEL X.npy OUT.npy [f64|f32] [repeats]

use std::path::Path;
use std::time::Instant;

use ntklab::net::{cast, NtkOutputs};

fn main() -> ntklab::Result<()> {
    ntklab::data::memory::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: entk_in_process MODEL X.npy OUT.npy [f64|f32] [repeats]");
        std::process::exit(2);
    }
    let net = ntklab::net::io::load_mlp(Path::new(&args[1]), &Default::default())?;
    let (x, _) = ntklab::data::io::read_examples(Path::new(&args[2]))?;
    let f32_lanes = match args.get(4).map(String::as_str) {
        None | Some("f64") => false,
        Some("f32") => true,
        Some(other) => {
            eprintln!("precision must be f64 or f32, got `{other}`");
            std::process::exit(2);
        }
    };
    let repeats: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let (n32, x32) = (net.cast::<f32>(), cast::<f64, f32>(x.as_ref()));
    let run = || -> ntklab::Result<faer::Mat<f64>> {
        if f32_lanes {
            Ok(cast(n32.empirical_ntk(x32.as_ref(), None, NtkOutputs::Trace)?.as_ref()))
        } else {
            net.empirical_ntk(x.as_ref(), None, NtkOutputs::Trace)
        }
    };
    let t0 = Instant::now();
    let k = run()?;
    let first = t0.elapsed().as_secs_f64();
    while t0.elapsed().as_secs_f64() < 0.5 {
        run()?;
    }
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    ntklab::data::io::write_atomic(Path::new(&args[3]), |w| ntklab::data::io::npy_mat_into(w, k.as_ref(), None))?;
    let runs: Vec<String> = times.iter().map(|t| format!("{t:.5}")).collect();
    println!("{{\"first_s\": {first:.5}, \"runs_s\": [{}]}}", runs.join(", "));
    Ok(())
}
