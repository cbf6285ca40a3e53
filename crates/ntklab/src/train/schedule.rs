//! Learning-rate schedules: eta_s = eta * warmup(s) * decay(s) for steps s = 0, 1, ..., S - 1.
//!
//! * warmup(s) = min(1, (s + 1) / W) (linear warmup over W steps; W = 0: none). The first step is eta / W, not 0.
//! * decay: constant 1; step gamma^floor(s / every); cosine f + (1 - f) (1 + cos(pi p)) / 2 and linear
//!   1 - (1 - f) p, with p = (s - W) / (S - W) clamped to [0, 1] (the decay starts after warmup) and f the
//!   final factor (eta_S = f eta).

use crate::{Error, Result};

/// The decay part of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Decay {
    /// decay(s) = 1.
    Constant,
    /// decay(s) = factor^floor(s / every) (multiply by `factor` every `every` steps).
    Step {
        /// Steps between decays, >= 1.
        every: u64,
        /// Multiplier per decay, in (0, 1].
        factor: f64,
    },
    /// Half-cosine from 1 down to `final_factor` over the steps after warmup (Loshchilov & Hutter 2017, no restarts).
    Cosine {
        /// decay at the last step, in [0, 1].
        final_factor: f64,
    },
    /// Linear from 1 down to `final_factor` over the steps after warmup.
    Linear {
        /// decay at the last step, in [0, 1].
        final_factor: f64,
    },
}

/// A learning-rate schedule: a multiplier of the base learning rate per step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// Decay after (and during) warmup.
    pub decay: Decay,
    /// Linear warmup steps W (0: none).
    pub warmup: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::constant()
    }
}

impl Schedule {
    /// The constant schedule: eta_s = eta.
    pub fn constant() -> Schedule {
        Schedule { decay: Decay::Constant, warmup: 0 }
    }

    /// Whether eta_s = eta for every step.
    pub fn is_constant(&self) -> bool {
        self.decay == Decay::Constant && self.warmup == 0
    }

    /// Checks the parameters (step `every` >= 1, factors in range).
    pub fn validate(&self) -> Result<()> {
        match self.decay {
            Decay::Constant => {}
            Decay::Step { every, factor } => {
                if every == 0 {
                    return Err(Error::Config("step schedule: `every` must be at least 1".into()));
                }
                if !(factor > 0.0 && factor <= 1.0) {
                    return Err(Error::Config(format!("step schedule: factor must be in (0, 1], got {factor}")));
                }
            }
            Decay::Cosine { final_factor } | Decay::Linear { final_factor } => {
                if !(0.0..=1.0).contains(&final_factor) {
                    return Err(Error::Config(format!("schedule final factor must be in [0, 1], got {final_factor}")));
                }
            }
        }
        Ok(())
    }

    /// The multiplier eta_s / eta at step s of a run of `total` steps (module docs give the formulas).
    pub fn factor(&self, step: u64, total: u64) -> f64 {
        let w = self.warmup;
        let warm = if step < w { (step + 1) as f64 / w as f64 } else { 1.0 };
        let progress = || {
            let span = total.saturating_sub(w);
            if span == 0 {
                1.0
            } else {
                (step.saturating_sub(w) as f64 / span as f64).clamp(0.0, 1.0)
            }
        };
        let decay = match self.decay {
            Decay::Constant => 1.0,
            Decay::Step { every, factor } => factor.powi((step / every.max(1)).min(i32::MAX as u64) as i32),
            Decay::Cosine { final_factor: f } => {
                f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * progress()).cos())
            }
            Decay::Linear { final_factor: f } => 1.0 - (1.0 - f) * progress(),
        };
        warm * decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_hit_their_landmarks() {
        let c = Schedule::constant();
        assert_eq!(c.factor(0, 10), 1.0);
        assert_eq!(c.factor(9, 10), 1.0);
        let s = Schedule { decay: Decay::Step { every: 3, factor: 0.5 }, warmup: 0 };
        assert_eq!([0, 2, 3, 6, 9].map(|i| s.factor(i, 10)), [1.0, 1.0, 0.5, 0.25, 0.125]);
        let w = Schedule { decay: Decay::Cosine { final_factor: 0.1 }, warmup: 4 };
        assert_eq!([0, 1, 3].map(|i| w.factor(i, 14)), [0.25, 0.5, 1.0]);
        assert!((w.factor(9, 14) - 0.55).abs() < 1e-15); // halfway through the decay: (1 + f)/2
        assert!((w.factor(14, 14) - 0.1).abs() < 1e-15);
        let l = Schedule { decay: Decay::Linear { final_factor: 0.0 }, warmup: 0 };
        assert!((l.factor(5, 10) - 0.5).abs() < 1e-15);
        assert!(Schedule { decay: Decay::Step { every: 0, factor: 0.5 }, warmup: 0 }.validate().is_err());
        assert!(Schedule { decay: Decay::Cosine { final_factor: 2.0 }, warmup: 0 }.validate().is_err());
        assert!(w.validate().is_ok());
    }
}
