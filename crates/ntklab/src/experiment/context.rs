//! What a running experiment talks to: a progress callback and a checkpoint of completed steps.
//!
//! An experiment wraps each unit of work (one width and seed, one learning rate, ...) in [`Context::step`] with a
//! key unique within the run. With a checkpoint attached, each finished step is appended to a JSON-lines file
//! (one line, flushed, per step) whose first line holds a content hash of the configuration; a resumed run with
//! the same configuration takes finished steps from the file instead of recomputing them, so an interrupted run
//! loses at most the step in flight. A torn last line (the process died while writing it) is dropped; a different
//! configuration is refused.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// A content hash (FNV-1a, 64 bits, then the MurmurHash3 finalizer so that every input byte moves every output
/// bit; hex) of a value's JSON form: equal configs, equal hashes.
pub fn content_hash<T: Serialize>(value: &T) -> String {
    bytes_hash(serde_json::to_string(value).unwrap_or_default().as_bytes())
}

/// The same hash of raw bytes (e.g. a data file's contents).
pub fn bytes_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    format!("{h:016x}")
}

struct Checkpoint {
    path: PathBuf,
    file: File,
    done: HashMap<String, serde_json::Value>,
}

/// Progress and checkpoints for one experiment run.
pub struct Context<'a> {
    progress: Box<dyn FnMut(usize, usize) + 'a>,
    check: Option<Box<dyn FnMut() -> Result<()> + 'a>>,
    checkpoint: Option<Checkpoint>,
    reused: usize,
}

impl<'a> Context<'a> {
    /// A context reporting `(done, total)` to `progress`, without a checkpoint.
    pub fn new(progress: impl FnMut(usize, usize) + 'a) -> Context<'a> {
        Context { progress: Box::new(progress), check: None, checkpoint: None, reused: 0 }
    }

    /// No progress, no checkpoint (tests, library callers).
    pub fn quiet() -> Context<'static> {
        Context::new(|_, _| {})
    }

    /// Attaches the checkpoint file `path` for a configuration with hash `config_hash`. With `resume`, finished
    /// steps of an earlier run of the same configuration are reused (an absent file starts empty); without it,
    /// the file starts over.
    pub fn with_checkpoint(mut self, path: &Path, config_hash: &str, resume: bool) -> Result<Context<'a>> {
        let mut done = HashMap::new();
        let mut keep_bytes = 0u64;
        // The hash covers the configuration and the build: steps computed by other code are not mixed in.
        let build = format!("{}-{}", env!("CARGO_PKG_VERSION"), option_env!("NTKLAB_GIT_COMMIT").unwrap_or(""));
        let config_hash = &content_hash(&(config_hash, &build));
        let header = serde_json::json!({ "ntklab_checkpoint": 1, "config_hash": config_hash }).to_string();
        if resume && path.is_file() {
            let f = File::open(path).map_err(|e| Error::file(path, e))?;
            let mut reader = BufReader::new(f);
            let mut line = String::new();
            let mut first = true;
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(|e| Error::file(path, e))?;
                if n == 0 || !line.ends_with('\n') {
                    break; // end, or a torn last line
                }
                let v: serde_json::Value = match serde_json::from_str(line.trim_end()) {
                    Ok(v) => v,
                    Err(_) => break,
                };
                if first {
                    let h = v.get("config_hash").and_then(|h| h.as_str()).unwrap_or("");
                    if h != config_hash {
                        return Err(Error::Config(format!(
                            "{} was written for a different configuration or ntklab build (hash {h}, now \
                             {config_hash}); run without --resume to start over",
                            path.display()
                        )));
                    }
                    first = false;
                } else if let (Some(k), Some(val)) = (v.get("key").and_then(|k| k.as_str()), v.get("value")) {
                    done.insert(k.to_string(), val.clone());
                }
                keep_bytes += n as u64;
            }
        }
        let file = if keep_bytes > 0 {
            let f = OpenOptions::new().write(true).open(path).map_err(|e| Error::file(path, e))?;
            f.set_len(keep_bytes).map_err(|e| Error::file(path, e))?;
            OpenOptions::new().append(true).open(path).map_err(|e| Error::file(path, e))?
        } else {
            let mut f = File::create(path).map_err(|e| Error::file(path, e))?;
            writeln!(f, "{header}").map_err(|e| Error::file(path, e))?;
            f
        };
        self.checkpoint = Some(Checkpoint { path: path.to_path_buf(), file, done });
        Ok(self)
    }

    /// Calls `check` before each step it computes; an error from it (e.g. [`Error::Cancelled`]) stops the run
    /// there, with the steps finished so far in the checkpoint.
    pub fn with_check(mut self, check: impl FnMut() -> Result<()> + 'a) -> Context<'a> {
        self.check = Some(Box::new(check));
        self
    }

    /// Reports progress.
    pub fn progress(&mut self, done: usize, total: usize) {
        (self.progress)(done, total);
    }

    /// Steps taken from the checkpoint instead of computed.
    pub fn reused(&self) -> usize {
        self.reused
    }

    /// The result of the step `key`: from the checkpoint when a resumed run finished it, computed by `f`
    /// (and appended to the checkpoint) otherwise.
    pub fn step<T: Serialize + DeserializeOwned>(&mut self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some(cp) = &self.checkpoint {
            if let Some(v) = cp.done.get(key) {
                match serde_json::from_value::<T>(v.clone()) {
                    Ok(t) => {
                        self.reused += 1;
                        return Ok(t);
                    }
                    // Recomputed (and appended again); said, so that a changed record format is not silent.
                    Err(e) => eprintln!("note: checkpointed step {key} cannot be read back ({e}); computing it again"),
                }
            }
        }
        if let Some(check) = &mut self.check {
            check()?;
        }
        let t = f()?;
        if let Some(cp) = &mut self.checkpoint {
            let value = serde_json::to_value(&t)
                .map_err(|e| Error::InvalidInput(format!("checkpoint of step {key}: cannot encode: {e}")))?;
            let line = serde_json::json!({ "key": key, "value": value }).to_string();
            writeln!(cp.file, "{line}").and_then(|_| cp.file.flush()).map_err(|e| Error::file(&cp.path, e))?;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_reused_after_an_interruption_and_refused_for_another_config() {
        let dir = std::env::temp_dir().join(format!("ntklab-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.jsonl");
        let mut calls = 0;
        {
            let mut ctx = Context::quiet().with_checkpoint(&path, "abc", false).unwrap();
            for k in 0..3 {
                let v: f64 = ctx
                    .step(&format!("k{k}"), || {
                        calls += 1;
                        Ok(k as f64 * 1.5)
                    })
                    .unwrap();
                assert_eq!(v, k as f64 * 1.5);
            }
        }
        // A torn last line, as a killed process leaves it.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"key\":\"k3\",\"va").unwrap();
        let mut ctx = Context::quiet().with_checkpoint(&path, "abc", true).unwrap();
        for k in 0..4 {
            let v: f64 = ctx
                .step(&format!("k{k}"), || {
                    calls += 1;
                    Ok(k as f64 * 1.5)
                })
                .unwrap();
            assert_eq!(v, k as f64 * 1.5);
        }
        assert_eq!((calls, ctx.reused()), (4, 3), "three steps reused, one computed");
        drop(ctx);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5, "header + 4 steps, torn line dropped:\n{text}");
        let e = Context::quiet().with_checkpoint(&path, "other", true).err().unwrap().to_string();
        assert!(e.contains("different configuration"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn content_hash_follows_content() {
        assert_eq!(content_hash(&(1, "a")), content_hash(&(1, "a")));
        assert_ne!(content_hash(&(1, "a")), content_hash(&(2, "a")));
    }
}
