//! The experiment registry: every reproduction behind one trait, so that `ntklab run <name>`, `ntklab run
//! --list` and `ntklab report` are one generic code path. A new reproduction is one library file implementing
//! [`Reproduction`] plus one line in [`REGISTRY`].

use std::marker::PhantomData;
use std::path::Path;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context::{content_hash, Context};
use crate::report::{now_unix, write_json, Provenance, Report};
use crate::{Error, Result};

/// A reproduction: a typed config with full and quick instances, a run producing a typed summary, and the report
/// made from that summary alone (so that `ntklab report` can remake it).
pub trait Reproduction: 'static {
    /// The name `ntklab run` takes.
    const NAME: &'static str;
    /// One line on what it reproduces.
    const DESCRIPTION: &'static str;
    /// Its configuration (the keys a `--config` TOML file overrides).
    type Config: Serialize + DeserializeOwned + Clone;
    /// What it measured (written as `summary.json`; the config is part of it).
    type Summary: Serialize + DeserializeOwned;
    /// The full-size instance.
    fn full() -> Self::Config;
    /// A small instance (seconds; CI).
    fn quick() -> Self::Config;
    /// The master seed.
    fn seed(cfg: &Self::Config) -> u64;
    /// Sets the master seed.
    fn set_seed(cfg: &mut Self::Config, seed: u64);
    /// Checks the config, naming the offending key.
    fn validate(cfg: &Self::Config) -> Result<()>;
    /// Runs it; units of work go through `ctx.step` so that an interrupted run resumes.
    fn run(cfg: &Self::Config, ctx: &mut Context) -> Result<Self::Summary>;
    /// The report of a summary.
    fn report(summary: &Self::Summary) -> Report;
    /// The key numbers for the terminal.
    fn console(summary: &Self::Summary) -> String;
}

/// A configuration ready to run: its JSON form, content hash and seed.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The configuration as JSON (typed again by the experiment).
    pub config: serde_json::Value,
    /// [`content_hash`] of the configuration.
    pub hash: String,
    /// The master seed.
    pub seed: u64,
}

/// What `execute` leaves behind.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The key numbers.
    pub console: String,
    /// Files written into the folder.
    pub files: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The object-safe face of a [`Reproduction`].
pub trait Experiment: Sync {
    /// Its name.
    fn name(&self) -> &'static str;
    /// One line on it.
    fn description(&self) -> &'static str;
    /// The default configuration (quick or full) as TOML text.
    fn default_toml(&self, quick: bool) -> Result<String>;
    /// The configuration: the quick or full instance, the keys of `overrides` replacing its own (unknown keys are
    /// an error naming the known ones), then the seed; validated.
    fn prepare(&self, quick: bool, overrides: Option<&toml::Table>, seed: Option<u64>) -> Result<Prepared>;
    /// Runs a prepared configuration and writes `summary.json`, the report and `provenance.json` into `dir`.
    fn execute(&self, prepared: &Prepared, dir: &Path, ctx: &mut Context) -> Result<Executed>;
    /// Remakes the report in `dir` from its `summary.json` and `provenance.json`.
    fn rereport(&self, dir: &Path) -> Result<Vec<String>>;
}

/// Adapts a [`Reproduction`] to [`Experiment`].
pub struct Typed<R>(PhantomData<fn() -> R>);

impl<R> Typed<R> {
    /// The adapter (a zero-sized value).
    pub const fn new() -> Self {
        Typed(PhantomData)
    }
}

impl<R> Default for Typed<R> {
    fn default() -> Self {
        Self::new()
    }
}

fn typed<R: Reproduction>(v: &serde_json::Value) -> Result<R::Config> {
    serde_json::from_value(v.clone()).map_err(|e| Error::Config(format!("{}: {e}", R::NAME)))
}

impl<R: Reproduction> Experiment for Typed<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn description(&self) -> &'static str {
        R::DESCRIPTION
    }

    fn default_toml(&self, quick: bool) -> Result<String> {
        let cfg = if quick { R::quick() } else { R::full() };
        toml::to_string(&cfg).map_err(|e| Error::Config(format!("{}: cannot write the config: {e}", R::NAME)))
    }

    fn prepare(&self, quick: bool, overrides: Option<&toml::Table>, seed: Option<u64>) -> Result<Prepared> {
        let base = if quick { R::quick() } else { R::full() };
        let mut cfg = match overrides {
            None => base,
            Some(over) => {
                let mut v = toml::Value::try_from(&base)
                    .map_err(|e| Error::Config(format!("{}: cannot write the config: {e}", R::NAME)))?;
                let table = v.as_table_mut().ok_or_else(|| Error::Config("configs are tables".into()))?;
                for (k, val) in over {
                    if !table.contains_key(k) {
                        let known: Vec<&str> = table.keys().map(|s| s.as_str()).collect();
                        return Err(Error::Config(format!("unknown key `{k}` (known: {})", known.join(", "))));
                    }
                    table.insert(k.clone(), val.clone());
                }
                v.try_into().map_err(|e: toml::de::Error| Error::Config(e.to_string().trim_end().to_string()))?
            }
        };
        if let Some(s) = seed {
            // Set after parsing: TOML integers stop at 2^63 - 1, but every u64 is a valid seed.
            R::set_seed(&mut cfg, s);
        }
        R::validate(&cfg)?;
        let config = serde_json::to_value(&cfg).map_err(|e| Error::Config(format!("{}: {e}", R::NAME)))?;
        Ok(Prepared { hash: content_hash(&config), config, seed: R::seed(&cfg) })
    }

    fn execute(&self, prepared: &Prepared, dir: &Path, ctx: &mut Context) -> Result<Executed> {
        let cfg = typed::<R>(&prepared.config)?;
        let started = now_unix();
        let t0 = Instant::now();
        let summary = R::run(&cfg, ctx)?;
        let seconds = t0.elapsed().as_secs_f64();
        write_json(&dir.join("summary.json"), &summary)?;
        let prov = Provenance::here(&format!("run:{}", R::NAME), Some(prepared.seed), started, seconds);
        let mut files = R::report(&summary).write(dir, &prov)?;
        files.push("summary.json".into());
        Ok(Executed { console: R::console(&summary), files, seconds })
    }

    fn rereport(&self, dir: &Path) -> Result<Vec<String>> {
        let p = dir.join("summary.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
        let summary: R::Summary =
            serde_json::from_str(&text).map_err(|e| Error::file(&p, format!("not a summary of `{}`: {e}", R::NAME)))?;
        let prov = Provenance::read(dir)?;
        R::report(&summary).write(dir, &prov)
    }
}

/// Every reproduction `ntklab run` knows, in the order `--list` shows them.
pub const REGISTRY: &[&dyn Experiment] = &[
    &Typed::<super::linearity::Linearity>::new(),
    &Typed::<super::linearity_dag::LinearityDag>::new(),
    &Typed::<super::catapult::Catapult>::new(),
    &Typed::<super::nngp_prior::NngpPrior>::new(),
    &Typed::<super::pl::Pl>::new(),
    &Typed::<super::depth::Depth>::new(),
    &Typed::<super::lazy::Lazy>::new(),
    &Typed::<super::eos::Eos>::new(),
    &Typed::<super::double_descent::DoubleDescent>::new(),
    &Typed::<super::spectral_bias::SpectralBias>::new(),
];

/// The reproduction called `name`, or an error listing the known ones.
pub fn find(name: &str) -> Result<&'static dyn Experiment> {
    REGISTRY.iter().copied().find(|e| e.name() == name).ok_or_else(|| {
        let known: Vec<&str> = REGISTRY.iter().map(|e| e.name()).collect();
        Error::Config(format!("unknown experiment `{name}` (known: {})", known.join(", ")))
    })
}
