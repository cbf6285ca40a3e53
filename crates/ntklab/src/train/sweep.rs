//! Sweeps: a base train config, grid axes over any config key (`optimizer.lr=0.1,0.3,1`), and seeds, expanded
//! into runs identified by a content hash of their full config (equal configs, equal ids: a repeated sweep
//! skips what is done). The table of final metrics and the sweep's report page are made here; running the
//! points is the caller's (`ntklab sweep`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TrainSummary;
use crate::experiment::content_hash;
use crate::report::{write_json, write_text, Chart, Report, Section, Series};
use crate::{Error, Result};

/// One grid axis: a dotted config key and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// E.g. `optimizer.lr`.
    pub key: String,
    /// The values, as TOML values (numbers, booleans, strings, arrays).
    pub values: Vec<toml::Value>,
}

/// Splits at commas outside parentheses, brackets and quotes (so `dense(8),relu,dense(1)` stays one value when
/// given as `"dense(8),relu,dense(1)"` or inside brackets).
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, None::<char>);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '(' | '[' | '{') => {
                depth += 1;
                cur.push(c);
            }
            (None, ')' | ']' | '}') => {
                depth -= 1;
                cur.push(c);
            }
            (None, ',') if depth == 0 => out.push(std::mem::take(&mut cur)),
            (None, c) => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|v| v.trim().to_string()).collect()
}

/// A value as TOML: a number, boolean, quoted string or array when it parses as one, a bare string otherwise.
fn value_of(text: &str) -> toml::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// Parses `key=v1,v2,...`. Values separate at top-level commas; quote a value that contains top-level commas
/// (`model.arch="dense(64),relu,dense(1)","dense(256),relu,dense(1)"`).
pub fn parse_axis(spec: &str) -> Result<Axis> {
    let (key, vals) = spec
        .split_once('=')
        .ok_or_else(|| Error::parse(spec, "a grid axis is key=v1,v2,... (e.g. optimizer.lr=0.1,0.3,1)"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.trim().is_empty()) {
        return Err(Error::parse(spec, "the key is a dotted config path such as optimizer.lr"));
    }
    if key == "seed" {
        return Err(Error::parse(spec, "seeds are swept with --seeds"));
    }
    let values: Vec<toml::Value> = split_top(vals).iter().filter(|v| !v.is_empty()).map(|v| value_of(v)).collect();
    if values.is_empty() {
        return Err(Error::parse(spec, "no values"));
    }
    Ok(Axis { key: key.to_string(), values })
}

/// Parses seeds: `0..4` (0, 1, 2, 3), `0..=4`, or a list `1,5,9`.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>> {
    const MAX: u64 = 100_000;
    let s = spec.trim();
    let num = |t: &str| crate::data::seed::parse(t).map_err(|m| Error::parse(spec, m));
    let too_many = || Error::parse(spec, format!("more than {MAX} seeds"));
    let seeds: Vec<u64> = if let Some((a, b)) = s.split_once("..=") {
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(Error::parse(spec, "empty seed range"));
        }
        if b - a >= MAX {
            return Err(too_many());
        }
        (a..=b).collect()
    } else if let Some((a, b)) = s.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if a >= b {
            return Err(Error::parse(spec, "empty seed range (0..4 means 0, 1, 2, 3)"));
        }
        if b - a > MAX {
            return Err(too_many());
        }
        (a..b).collect()
    } else {
        let v: Vec<u64> = s.split(',').map(num).collect::<Result<_>>()?;
        if v.len() as u64 > MAX {
            return Err(too_many());
        }
        v
    };
    Ok(seeds)
}

/// Sets the dotted `key` in `table` (creating sub-tables), returning an error when a path component is a value.
pub fn set_key(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let mut t = table;
    for p in &parts[..parts.len() - 1] {
        let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| Error::Config(format!("`{key}`: `{p}` is a value, not a section")))?;
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct Point {
    /// (key, value) per axis, in axis order.
    pub settings: Vec<(String, toml::Value)>,
    /// Its seed, when seeds are swept.
    pub seed: Option<u64>,
    /// The full config.
    pub config: toml::Table,
    /// Content hash of the config: the run's id and folder name.
    pub id: String,
}

/// The metrics a sweep can tabulate: the numeric fields of a [`super::Record`].
pub const METRICS: &[&str] = &[
    "loss",
    "grad_norm",
    "test_loss",
    "accuracy",
    "test_accuracy",
    "pl_ratio",
    "ntk_max",
    "ntk_min",
    "ntk_change",
    "sharpness",
    "weight_change",
    "lin_loss",
    "lin_distance",
    "lin_test_distance",
];

/// The grid's distinct runs: every combination of the axes' values (the last axis fastest), times the seeds;
/// points with the same full config (a repeated value, a value equal to the base) are kept once. A key given
/// by two axes is an error.
pub fn expand(base: &toml::Table, axes: &[Axis], seeds: &[u64]) -> Result<Vec<Point>> {
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.key == a.key) {
            return Err(Error::Config(format!("`{}` is swept twice; give all its values in one --grid", a.key)));
        }
    }
    let total = axes.iter().try_fold(seeds.len().max(1), |acc, a| acc.checked_mul(a.values.len()));
    match total {
        Some(n) if n <= 100_000 => {}
        _ => return Err(Error::Config("the sweep has more than 100000 runs".into())),
    }
    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
    for a in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                a.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((a.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    let seed_list: Vec<Option<u64>> =
        if seeds.is_empty() { vec![None] } else { seeds.iter().map(|&s| Some(s)).collect() };
    let mut out = Vec::new();
    for c in &combos {
        for &seed in &seed_list {
            let mut config = base.clone();
            config.remove("out");
            for (k, v) in c {
                set_key(&mut config, k, v.clone())?;
            }
            if let Some(s) = seed {
                // TOML integers stop at 2^63 - 1; larger seeds are written as strings (both read back).
                let v = i64::try_from(s).map_or_else(|_| toml::Value::String(s.to_string()), toml::Value::Integer);
                config.insert("seed".into(), v);
            }
            let id = content_hash(&config)[..12].to_string();
            if !out.iter().any(|p: &Point| p.id == id) {
                out.push(Point { settings: c.clone(), seed, config, id });
            }
        }
    }
    Ok(out)
}

/// The value of a setting as shown in tables (strings without quotes).
pub fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line of the sweep table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Run id (its folder under `runs/`).
    pub id: String,
    /// Axis key -> value.
    pub settings: BTreeMap<String, String>,
    /// Seed, when swept.
    pub seed: Option<u64>,
    /// `completed`, `converged`, `diverged`, ... or `failed: <error>`.
    pub status: String,
    /// Final training loss.
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub final_loss: Option<f64>,
    /// Final test loss.
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub final_test_loss: Option<f64>,
    /// The chosen metric at the last record.
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub metric: Option<f64>,
    /// Steps performed.
    pub steps: Option<u64>,
}

/// The metric `name` (a field of the last record, e.g. `loss`, `test_loss`, `sharpness`, `ntk_change`) of a run.
pub fn metric_of(summary: &TrainSummary, name: &str) -> Option<f64> {
    let last = serde_json::to_value(summary.last.as_ref()?).ok()?;
    last.get(name)?.as_f64()
}

/// A row from a finished run's summary (None: the run failed with `error`).
pub fn row(p: &Point, summary: std::result::Result<&TrainSummary, &str>, metric: &str) -> SweepRow {
    let settings = p.settings.iter().map(|(k, v)| (k.clone(), show(v))).collect();
    match summary {
        Ok(s) => SweepRow {
            id: p.id.clone(),
            settings,
            seed: p.seed,
            status: s.status_text.clone(),
            final_loss: s.last.as_ref().map(|r| r.loss),
            final_test_loss: s.last.as_ref().and_then(|r| r.test_loss),
            metric: metric_of(s, metric),
            steps: Some(s.steps),
        },
        Err(e) => SweepRow {
            id: p.id.clone(),
            settings,
            seed: p.seed,
            status: format!("failed: {e}"),
            final_loss: None,
            final_test_loss: None,
            metric: None,
            steps: None,
        },
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:e}"))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `sweep.csv` and `sweep.json` into `dir` (atomically).
pub fn write_table(dir: &Path, axes: &[Axis], rows: &[SweepRow], metric: &str) -> Result<()> {
    let mut head: Vec<String> = vec!["id".into()];
    head.extend(axes.iter().map(|a| a.key.clone()));
    head.extend(["seed", "status", "final_loss", "final_test_loss", metric, "steps"].map(String::from));
    let mut text = head.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",") + "\n";
    for r in rows {
        let mut f = vec![r.id.clone()];
        f.extend(axes.iter().map(|a| r.settings.get(&a.key).cloned().unwrap_or_default()));
        f.push(r.seed.map_or(String::new(), |s| s.to_string()));
        f.push(r.status.clone());
        f.extend([num(r.final_loss), num(r.final_test_loss), num(r.metric)]);
        f.push(r.steps.map_or(String::new(), |s| s.to_string()));
        text += &(f.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(",") + "\n");
    }
    write_text(&dir.join("sweep.csv"), &text)?;
    write_json(
        &dir.join("sweep.json"),
        &serde_json::json!({ "metric": metric, "axes": axes.iter().map(|a| &a.key).collect::<Vec<_>>(), "runs": rows }),
    )
}

/// The sweep's page: the metric against the first axis (one curve per combination of the other axes, the mean
/// over seeds, each seed as a marker), and the table.
pub fn report(axes: &[Axis], rows: &[SweepRow], metric: &str, base_name: &str) -> Report {
    let mut sections = Vec::new();
    if let Some(first) = axes.first() {
        let numeric = first.values.iter().all(|v| v.as_float().or(v.as_integer().map(|i| i as f64)).is_some());
        let xs: Vec<String> = first.values.iter().map(show).collect();
        let x_of = |s: &str| -> f64 {
            if numeric {
                s.parse::<f64>().unwrap_or(f64::NAN)
            } else {
                xs.iter().position(|x| x == s).map_or(f64::NAN, |i| i as f64)
            }
        };
        let mut groups: BTreeMap<String, Vec<&SweepRow>> = BTreeMap::new();
        for r in rows {
            let rest: Vec<String> = axes[1..]
                .iter()
                .map(|a| format!("{}={}", a.key, r.settings.get(&a.key).cloned().unwrap_or_default()))
                .collect();
            groups.entry(rest.join(", ")).or_default().push(r);
        }
        let mut series = Vec::new();
        for (name, rs) in &groups {
            let label = if name.is_empty() { metric.to_string() } else { name.clone() };
            let mut mean = Vec::new();
            for x in &xs {
                let v: Vec<f64> = rs
                    .iter()
                    .filter(|r| r.settings.get(&first.key) == Some(x))
                    .filter_map(|r| r.metric)
                    .filter(|m| m.is_finite())
                    .collect();
                if !v.is_empty() {
                    mean.push((x_of(x), v.iter().sum::<f64>() / v.len() as f64));
                }
            }
            let pts: Vec<(f64, f64)> =
                rs.iter().filter_map(|r| Some((x_of(r.settings.get(&first.key)?), r.metric?))).collect();
            series.push(Series::line(format!("{label} (mean over seeds)"), mean));
            series.push(Series::markers(format!("{label} (runs)"), pts));
        }
        let positive = rows.iter().filter_map(|r| r.metric).all(|m| m > 0.0);
        let log_x = numeric
            && first.values.iter().all(|v| v.as_float().or(v.as_integer().map(|i| i as f64)).is_some_and(|x| x > 0.0));
        let chart = Chart {
            title: format!("{metric} at the end of each run"),
            x_label: if numeric { first.key.clone() } else { format!("{} (index: {})", first.key, xs.join(" | ")) },
            y_label: metric.into(),
            log_x,
            log_y: positive,
            series,
            hlines: vec![],
        };
        sections.push(Section::Plot { stem: "sweep".into(), chart, caption: format!("{metric} across the grid") });
    }
    let mut headers: Vec<String> = vec!["run".into()];
    headers.extend(axes.iter().map(|a| a.key.clone()));
    headers.extend(["seed", "status", "final loss", "final test loss", metric].map(String::from));
    let table_rows = rows
        .iter()
        .map(|r| {
            let mut f = vec![format!("runs/{}", r.id)];
            f.extend(axes.iter().map(|a| r.settings.get(&a.key).cloned().unwrap_or_default()));
            f.push(r.seed.map_or("-".into(), |s| s.to_string()));
            f.push(r.status.clone());
            let g = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.4e}"));
            f.extend([g(r.final_loss), g(r.final_test_loss), g(r.metric)]);
            f
        })
        .collect();
    sections.push(Section::Table { caption: "Every run (folders under runs/)".into(), headers, rows: table_rows });
    let failed = rows.iter().filter(|r| r.status.starts_with("failed")).count();
    Report {
        title: format!("Sweep over {base_name}"),
        claim: "A grid of training runs from one base config; each run is a full run folder with its own report."
            .into(),
        setup: format!(
            "{} runs: {}; metric `{metric}` at the last record{}.",
            rows.len(),
            axes.iter()
                .map(|a| format!("{} in {{{}}}", a.key, a.values.iter().map(show).collect::<Vec<_>>().join(", ")))
                .collect::<Vec<_>>()
                .join("; "),
            if failed > 0 { format!("; {failed} failed") } else { String::new() }
        ),
        comparisons: vec![],
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_seeds_and_expansion() {
        let a = parse_axis("optimizer.lr=0.1,0.3,1").unwrap();
        assert_eq!(a.values, vec![toml::Value::Float(0.1), toml::Value::Float(0.3), toml::Value::Integer(1)]);
        let b = parse_axis("model.arch=\"dense(8),relu,dense(1)\",dense(4),relu,dense(1)").unwrap();
        assert_eq!(b.values.len(), 4, "unquoted top-level commas split");
        assert_eq!(b.values[0], toml::Value::String("dense(8),relu,dense(1)".into()));
        assert!(parse_axis("lr").is_err() && parse_axis("=1").is_err() && parse_axis("seed=1,2").is_err());
        assert_eq!(parse_seeds("0..4").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_seeds("2..=3").unwrap(), vec![2, 3]);
        assert_eq!(parse_seeds("7, 18446744073709551615").unwrap(), vec![7, u64::MAX]);
        assert!(parse_seeds("4..4").is_err() && parse_seeds("x").is_err());
        let base: toml::Table = "seed = 1\nout = \"x\"\n[optimizer]\nlr = 0.5\n".parse().unwrap();
        let pts = expand(&base, std::slice::from_ref(&a), &[0, 1]).unwrap();
        assert_eq!(pts.len(), 6);
        assert_eq!(pts[1].config["optimizer"]["lr"], toml::Value::Float(0.1));
        assert_eq!(pts[1].config["seed"], toml::Value::Integer(1));
        assert!(!pts[0].config.contains_key("out"));
        // Ids follow the content: all distinct, and the same on a second expansion.
        let ids: std::collections::BTreeSet<&String> = pts.iter().map(|p| &p.id).collect();
        assert_eq!(ids.len(), 6);
        assert_eq!(expand(&base, &[a], &[0, 1]).unwrap()[4].id, pts[4].id);
        // A repeated value (0.1 and 1e-1) is one run; a key swept twice is an error.
        let dup = parse_axis("optimizer.lr=0.1,1e-1,0.5").unwrap();
        assert_eq!(expand(&base, std::slice::from_ref(&dup), &[]).unwrap().len(), 2, "0.1 and 1e-1 are one run");
        assert!(expand(&base, &[dup.clone(), dup], &[]).unwrap_err().to_string().contains("swept twice"));
        assert!(parse_seeds("0..18446744073709551615").unwrap_err().to_string().contains("more than"));
        let mut t = toml::Table::new();
        set_key(&mut t, "model.arch", "relu".into()).unwrap();
        assert!(set_key(&mut t, "model.arch.x", 1.into()).is_err());
    }
}
