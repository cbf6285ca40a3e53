//! Reports: what a run measured, as one self-contained HTML page, a Markdown file and plots (SVG and PNG).
//!
//! A [`Report`] is built from a typed summary (by an experiment, `train` or `sweep`) and holds the paper's claim,
//! the setup, claim-versus-measurement rows, tables, plots and free text. [`Report::write`] writes
//! `report.md`, `report.html` (inline SVG, inline CSS, no network resource) and `<plot>.svg/.png`, each file
//! atomically. [`Provenance`] records who made it: ntklab version, git commit when known, command line, seed,
//! machine and wall time; it is stored as `provenance.json` so that `ntklab report` can regenerate the page
//! from `summary.json` alone. [`write_index`] writes an `index.html` linking every report under a folder.

pub mod plot;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use plot::{Chart, Series};

use crate::data::io::write_atomic;
use crate::{Error, Result};

/// One row of "the paper says / we measured".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The quantity, e.g. "slope of ||d2f|| vs width".
    pub quantity: String,
    /// The claim, e.g. "-0.5".
    pub expected: String,
    /// The measurement, e.g. "-0.49".
    pub measured: String,
    /// Whether the measurement agrees with the claim by the experiment's own criterion (None: not judged).
    pub agrees: Option<bool>,
}

/// A block of a report, in order.
#[derive(Debug, Clone)]
pub enum Section {
    /// A heading and paragraphs (blank-line separated; `code` in backticks).
    Text { heading: Option<String>, body: String },
    /// A table with a caption.
    Table { caption: String, headers: Vec<String>, rows: Vec<Vec<String>> },
    /// A plot written as `<stem>.svg` and `<stem>.png` and inlined into the HTML page.
    Plot { stem: String, chart: Chart, caption: String },
}

/// A whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Page title.
    pub title: String,
    /// The claim being reproduced, with its source.
    pub claim: String,
    /// The setup in one paragraph.
    pub setup: String,
    /// Claim versus measurement.
    pub comparisons: Vec<Comparison>,
    /// Tables, plots and text, in order.
    pub sections: Vec<Section>,
}

/// Where a report came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// What produced the folder: `run:<experiment>`, `train` or `sweep`.
    pub kind: String,
    /// ntklab version.
    pub version: String,
    /// Git commit of the build, when it was built from a checkout.
    pub commit: Option<String>,
    /// The command line.
    pub command: Vec<String>,
    /// The master seed.
    pub seed: Option<u64>,
    /// Host name, OS, architecture and logical CPUs.
    pub machine: String,
    /// Start time, seconds since the Unix epoch (UTC).
    pub started_unix: u64,
    /// Wall time in seconds.
    pub wall_seconds: f64,
}

impl Provenance {
    /// The provenance of the current process, started at `started_unix`, for a run of `kind`.
    pub fn here(kind: &str, seed: Option<u64>, started_unix: u64, wall_seconds: f64) -> Provenance {
        Provenance {
            kind: kind.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: option_env!("NTKLAB_GIT_COMMIT").filter(|c| !c.is_empty()).map(str::to_string),
            command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
            seed,
            machine: machine(),
            started_unix,
            wall_seconds,
        }
    }

    /// Reads `provenance.json` in `dir`.
    pub fn read(dir: &Path) -> Result<Provenance> {
        let p = dir.join("provenance.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
        serde_json::from_str(&text).map_err(|e| Error::file(&p, format!("not a provenance record: {e}")))
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// "host (linux x86_64, 2 logical CPUs)".
fn machine() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{host} ({} {}, {cpus} logical CPUs)", std::env::consts::OS, std::env::consts::ARCH)
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, Howard Hinnant's algorithm).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escaped paragraph text with `code` spans.
fn inline(s: &str) -> String {
    let mut o = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(o, "<code>{}</code>", esc(part));
        } else {
            o.push_str(&esc(part));
        }
    }
    o
}

fn paragraphs(body: &str) -> String {
    body.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>\n", inline(&p.replace('\n', " "))))
        .collect()
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#1d1d1f;line-height:1.5}h1{font-size:1.7rem;margin-bottom:.2rem}h2{font-size:1.25rem;\
margin-top:2rem;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th{background:#f3f3f3}td:first-child,\
th:first-child{text-align:left}caption{caption-side:top;text-align:left;font-weight:600;padding:.3rem 0}\
figure{margin:1rem 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9rem;\
color:#555}.claim{background:#f6f8ff;border-left:4px solid #4062bb;padding:.5rem 1rem}.ok{color:#17752b;\
font-weight:600}.bad{color:#b3261e;font-weight:600}.prov td{text-align:left}code{background:#f3f3f3;\
padding:0 .2rem;border-radius:3px;overflow-wrap:anywhere}";

fn table_html(caption: &str, headers: &[String], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table>");
    if !caption.is_empty() {
        let _ = write!(s, "<caption>{}</caption>", inline(caption));
    }
    s.push_str("<tr>");
    for h in headers {
        let _ = write!(s, "<th>{}</th>", inline(h));
    }
    s.push_str("</tr>\n");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", inline(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

fn table_md(caption: &str, headers: &[String], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    if !caption.is_empty() {
        let _ = writeln!(s, "{caption}\n");
    }
    let _ = writeln!(s, "| {} |", headers.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(headers.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// The SVG of a plot with its XML prologue removed, ready to inline.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

impl Report {
    /// The comparison rows as a table (quantity, claim, measured, verdict).
    fn comparison_rows(&self) -> Vec<Vec<String>> {
        self.comparisons
            .iter()
            .map(|c| {
                let verdict = match c.agrees {
                    Some(true) => "agrees",
                    Some(false) => "differs",
                    None => "",
                };
                vec![c.quantity.clone(), c.expected.clone(), c.measured.clone(), verdict.to_string()]
            })
            .collect()
    }

    fn provenance_rows(p: &Provenance) -> Vec<(String, String)> {
        vec![
            ("produced by".into(), p.kind.clone()),
            (
                "ntklab".into(),
                format!("{}{}", p.version, p.commit.as_ref().map_or(String::new(), |c| format!(" ({c})"))),
            ),
            ("command".into(), p.command.join(" ")),
            ("seed".into(), p.seed.map_or("-".into(), |s| s.to_string())),
            ("machine".into(), p.machine.clone()),
            ("started".into(), utc(p.started_unix)),
            ("wall time".into(), format!("{:.1} s", p.wall_seconds)),
        ]
    }

    /// The Markdown report (plots linked as `<stem>.svg`).
    pub fn to_markdown(&self, prov: &Provenance) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {}\n", self.title);
        let _ = writeln!(s, "> {}\n", self.claim.replace('\n', "\n> "));
        let _ = writeln!(s, "{}\n", self.setup);
        if !self.comparisons.is_empty() {
            let h = ["quantity", "claim", "measured", "verdict"].map(String::from);
            let _ = writeln!(s, "{}", table_md("## Claim and measurement\n", &h, &self.comparison_rows()));
        }
        for sec in &self.sections {
            match sec {
                Section::Text { heading, body } => {
                    if let Some(h) = heading {
                        let _ = writeln!(s, "## {h}\n");
                    }
                    let _ = writeln!(s, "{}\n", body.trim());
                }
                Section::Table { caption, headers, rows } => {
                    let _ = writeln!(s, "{}", table_md(caption, headers, rows));
                }
                Section::Plot { stem, caption, .. } => {
                    let _ = writeln!(s, "![{caption}]({stem}.svg)\n\n{caption}\n");
                }
            }
        }
        let _ = writeln!(s, "## Provenance\n");
        for (k, v) in Self::provenance_rows(prov) {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s
    }

    /// The self-contained HTML page; `svgs` holds each plot's SVG in section order.
    pub fn to_html(&self, prov: &Provenance, svgs: &[String]) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><style>{CSS}</style></head><body>\n",
            esc(&self.title)
        );
        let _ = writeln!(s, "<h1>{}</h1>", esc(&self.title));
        let _ = writeln!(s, "<div class=\"claim\">{}</div>", paragraphs(&self.claim));
        let _ = writeln!(s, "<h2>Setup</h2>\n{}", paragraphs(&self.setup));
        if !self.comparisons.is_empty() {
            let _ = writeln!(s, "<h2>Claim and measurement</h2>");
            let h = ["quantity", "claim", "measured", "verdict"].map(String::from);
            let mut t = table_html("", &h, &self.comparison_rows());
            // Colour the verdicts.
            t = t.replace("<td>agrees</td>", "<td class=\"ok\">agrees</td>");
            t = t.replace("<td>differs</td>", "<td class=\"bad\">differs</td>");
            s.push_str(&t);
        }
        let mut k = 0;
        for sec in &self.sections {
            match sec {
                Section::Text { heading, body } => {
                    if let Some(h) = heading {
                        let _ = writeln!(s, "<h2>{}</h2>", esc(h));
                    }
                    s.push_str(&paragraphs(body));
                }
                Section::Table { caption, headers, rows } => s.push_str(&table_html(caption, headers, rows)),
                Section::Plot { stem, caption, .. } => {
                    let svg = svgs.get(k).map_or("", |x| inline_svg(x));
                    k += 1;
                    let _ = writeln!(
                        s,
                        "<figure id=\"plot-{}\">{svg}<figcaption>{} (<code>{}.svg</code>, <code>{}.png</code>)\
                         </figcaption></figure>",
                        esc(stem),
                        inline(caption),
                        esc(stem),
                        esc(stem)
                    );
                }
            }
        }
        let _ = writeln!(s, "<h2>Provenance</h2>\n<table class=\"prov\">");
        for (k, v) in Self::provenance_rows(prov) {
            let _ = writeln!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
        }
        s.push_str("</table>\n</body></html>\n");
        s
    }

    /// The plot stems, in order.
    pub fn plot_stems(&self) -> Vec<&str> {
        self.sections
            .iter()
            .filter_map(|s| match s {
                Section::Plot { stem, .. } => Some(stem.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Writes the plots, `report.md`, `report.html` and `provenance.json` into `dir`; returns the file names.
    pub fn write(&self, dir: &Path, prov: &Provenance) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut svgs = Vec::new();
        for sec in &self.sections {
            if let Section::Plot { stem, chart, .. } = sec {
                svgs.push(plot::save(chart, &dir.join(stem))?);
                names.push(format!("{stem}.svg"));
                names.push(format!("{stem}.png"));
            }
        }
        write_text(&dir.join("report.md"), &self.to_markdown(prov))?;
        write_text(&dir.join("report.html"), &self.to_html(prov, &svgs))?;
        write_text(&dir.join("provenance.json"), &(serde_json::to_string_pretty(prov).map_err(json_err)? + "\n"))?;
        names.extend(["report.md", "report.html", "provenance.json"].map(String::from));
        Ok(names)
    }
}

fn json_err(e: serde_json::Error) -> Error {
    Error::InvalidInput(format!("cannot encode JSON: {e}"))
}

/// Writes `text` to `path` atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_text(path, &(serde_json::to_string_pretty(value).map_err(json_err)? + "\n"))
}

/// Every folder at or under `root` (depth-first, sorted, at most `max_depth` levels down, skipping `.partial`
/// folders) for which `keep` holds.
pub fn find_dirs(root: &Path, max_depth: usize, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, depth: usize, max: usize, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
        if keep(d) {
            out.push(d.to_path_buf());
        }
        if depth >= max {
            return;
        }
        let Ok(rd) = std::fs::read_dir(d) else { return };
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".partial")))
            .collect();
        subs.sort();
        for s in subs {
            walk(&s, depth + 1, max, keep, out);
        }
    }
    walk(root, 0, max_depth, keep, &mut out);
    out
}

/// Every folder at or under `root` holding a `report.html` (see [`find_dirs`]).
pub fn find_reports(root: &Path, max_depth: usize) -> Vec<PathBuf> {
    find_dirs(root, max_depth, &|d| d.join("report.html").is_file())
}

/// Writes `root/index.html` linking every report under `root`, with each one's kind, start and wall time.
pub fn write_index(root: &Path) -> Result<usize> {
    let dirs = find_reports(root, 6);
    let mut rows = Vec::new();
    for d in &dirs {
        let rel = d.strip_prefix(root).unwrap_or(d);
        let rel_s = if rel.as_os_str().is_empty() { ".".to_string() } else { rel.to_string_lossy().replace('\\', "/") };
        // Percent-encode what would end or change the meaning of an href.
        let href: String = format!("{rel_s}/report.html")
            .chars()
            .map(|c| match c {
                ' ' | '"' | '#' | '?' | '%' | '<' | '>' => format!("%{:02X}", c as u32),
                c => c.to_string(),
            })
            .collect();
        let title = std::fs::read_to_string(d.join("report.html"))
            .ok()
            .and_then(|t| {
                let a = t.find("<title>")? + 7;
                let b = t[a..].find("</title>")? + a;
                Some(t[a..b].to_string())
            })
            .unwrap_or_default()
            .replace('<', "&lt;");
        let (kind, when, wall) = match Provenance::read(d) {
            Ok(p) => (p.kind, utc(p.started_unix), format!("{:.1} s", p.wall_seconds)),
            Err(_) => ("?".into(), "?".into(), "?".into()),
        };
        rows.push(format!(
            "<tr><td><a href=\"{}\">{}</a></td><td>{title}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&href),
            esc(&rel_s),
            esc(&kind),
            esc(&when),
            esc(&wall)
        ));
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ntklab runs under {}</title>\
         <style>{CSS}</style></head><body>\n<h1>Runs under <code>{}</code></h1>\n<table><tr><th>folder</th>\
         <th>title</th><th>kind</th><th>started</th><th>wall time</th></tr>\n{}\n</table>\n</body></html>\n",
        esc(&root.display().to_string()),
        esc(&root.display().to_string()),
        rows.join("\n")
    );
    write_text(&root.join("index.html"), &html)?;
    Ok(dirs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_651_199), "2026-11-25 23:59:59 UTC");
    }

    #[test]
    fn html_is_escaped_and_self_contained() {
        let r = Report {
            title: "a <b> & c".into(),
            claim: "x < y".into(),
            setup: "uses `code` and <script>".into(),
            comparisons: vec![Comparison {
                quantity: "slope".into(),
                expected: "-0.5".into(),
                measured: "-0.49".into(),
                agrees: Some(true),
            }],
            sections: vec![Section::Table {
                caption: "t".into(),
                headers: vec!["h".into()],
                rows: vec![vec!["<1>".into()]],
            }],
        };
        let p = Provenance::here("test", Some(3), 0, 1.0);
        let h = r.to_html(&p, &[]);
        assert!(h.contains("a &lt;b&gt; &amp; c") && h.contains("<code>code</code>") && h.contains("&lt;script&gt;"));
        assert!(!h.contains("<script") && !h.contains("http://") && !h.contains("https://"));
        assert!(h.contains("class=\"ok\">agrees"));
    }
}
