//! `ntklab`: the command-line front end. Parses arguments, shows progress, writes files and plots;
//! all mathematics lives in the `ntklab` library crate.

mod cmd_kernel;
mod cmd_net;
mod cmd_predict;
mod cmd_run;
mod cmd_sweep;
mod cmd_train;
mod util;

use clap::{Parser, Subcommand};

/// ntklab: exact infinite-width kernels, finite networks with exact derivatives, and training diagnostics.
#[derive(Parser, Debug)]
#[command(name = "ntklab", version, about, long_about = None)]
struct Cli {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Infinite-width NNGP and NTK of a fully-connected architecture on data (or `--demo`).
    Kernel(cmd_kernel::KernelArgs),
    /// Initialize a finite network and save its weights (safetensors or npz, PyTorch nn.Sequential names).
    Init(cmd_net::InitArgs),
    /// Empirical NTK of a saved network on data.
    Ntk(cmd_net::NtkArgs),
    /// Top eigenvalues of the loss Hessian (Lanczos on exact Hessian-vector products) with its Gauss-Newton part.
    Hessian(cmd_net::HessianArgs),
    /// Train a finite network with per-step diagnostics (`--config run.toml`).
    Train(cmd_train::TrainArgs),
    /// A grid of train runs (`--grid key=v1,v2 --seeds 0..4`), in parallel and resumable, with a table and a page.
    Sweep(cmd_sweep::SweepArgs),
    /// Closed-form infinite-width predictions: kernel regression, GP inference, gradient flow / GD at time t.
    Predict(cmd_predict::PredictArgs),
    /// Run a named reproduction (`--list` shows them) and write a report folder with an HTML page.
    Run(cmd_run::RunArgs),
    /// Remake the reports of run folders from their summaries and write an index.html linking them.
    Report(cmd_run::ReportArgs),
}

fn main() {
    ntklab::data::memory::keep_freed_memory();
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        if t == 0 {
            eprintln!("error: --threads must be at least 1");
            std::process::exit(2);
        }
        // More workers than 8 per core only adds start-up time and memory (each worker has its own stack): cap it.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cap = 8 * cores;
        let t = if t > cap {
            eprintln!("note: --threads {t} capped at {cap} (8 per core on this machine's {cores} cores)");
            cap
        } else {
            t
        };
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(t).build_global() {
            eprintln!("error: cannot set up {t} threads: {e}");
            std::process::exit(2);
        }
    }
    let res = match cli.cmd {
        Cmd::Kernel(a) => cmd_kernel::run(a),
        Cmd::Init(a) => cmd_net::run_init(a),
        Cmd::Ntk(a) => cmd_net::run_ntk(a),
        Cmd::Hessian(a) => cmd_net::run_hessian(a),
        Cmd::Train(a) => cmd_train::run(a),
        Cmd::Sweep(a) => cmd_sweep::run(a),
        Cmd::Predict(a) => cmd_predict::run(a),
        Cmd::Run(a) => cmd_run::run(a),
        Cmd::Report(a) => cmd_run::run_report(a),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
