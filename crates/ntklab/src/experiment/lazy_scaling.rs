//! Two parts of `ntklab run lazy` (see `experiment/lazy.rs`): the width scalings of the lecture's table and the
//! particle picture.
//!
//! **Scaling table.** For widths m, the student of `lazy.rs` without symmetrization under the mean-field
//! (h = (1/m) sum_j a_j relu(b_j.x)) and the lazy (1/sqrt m) normalization, with the same raw weights. Measured:
//! the output size at init ||h(w_0)|| (root mean square over the training inputs; expected m^-1/2 mean-field,
//! m^0 lazy) and the mean per-neuron displacement ||(a_j, b_j)(T) - (a_j, b_j)(0)|| after `steps` GD steps
//! (expected m^0 mean-field, m^-1/2 lazy). Step sizes: lazy eta = lr_factor 2N / lambda_max(K_lazy); mean-field m
//! eta (its tangent kernel is K_lazy / m for the same raw weights, so both move the function at the same speed:
//! the mean-field time scale).
//!
//! **Particles.** d = 2, inputs on the unit circle, a teacher of positive neurons (`plane_teacher`), a
//! symmetrized student of width m at two scales tau. Neuron j
//! contributes tau/sqrt(m) a_j relu(b_j.x) = sign(a_j) relu(p_j.x) with p_j = tau/sqrt(m) |a_j| b_j (ReLU is
//! positively homogeneous), so the particle p_j in the plane is the neuron; the teacher's neurons are its unit
//! vectors t_k. At a small scale the particles start near 0 and travel to the teacher's directions; at a large one
//! they barely move. Same step rule as the scale sweep.

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::lazy::{
    neuron_displacement, step_on_loss, student, teacher_data, LazyConfig, PARTICLE_STREAM, SCALING_STREAM,
};
use super::{fit_power_law, mean_std, Context, PowerLawFit};
use crate::data::synthetic::{derive_seed, rng};
use crate::kernel::Parameterization;
use crate::net::NtkOutputs;
use crate::spectrum::max_eigenvalue;
use crate::train::probes::symmetrized;
use crate::train::{train_with_progress, ProbeConfig, TrainConfig};
use crate::{Error, Result};
use rand_distr::{Distribution, Uniform};

/// The scaling table's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingConfig {
    /// Widths m.
    pub widths: Vec<usize>,
    /// Input dimension.
    pub input_dim: usize,
    /// Training points.
    pub n_train: usize,
    /// GD steps.
    pub steps: u64,
    /// Lazy step size as a fraction of 2N / lambda_max(K_lazy).
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
    /// Initializations per width.
    pub trials: usize,
}

impl ScalingConfig {
    /// Widths 2^6 .. 2^13.
    pub fn full() -> ScalingConfig {
        ScalingConfig {
            widths: (6..=13).map(|k| 1 << k).collect(),
            input_dim: 10,
            n_train: 200,
            steps: 400,
            lr_factor: 0.25,
            trials: 3,
        }
    }

    /// Widths 2^6 .. 2^10.
    pub fn quick() -> ScalingConfig {
        ScalingConfig {
            widths: (6..=10).map(|k| 1 << k).collect(),
            n_train: 100,
            steps: 200,
            trials: 2,
            ..Self::full()
        }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.widths.len() < 2 || self.widths.iter().any(|&m| !(2..=1 << 16).contains(&m)) {
            return Err(Error::Config("scaling.widths: at least two, each in 2..=65536".into()));
        }
        if !(1..=1024).contains(&self.input_dim) || !(2..=10_000).contains(&self.n_train) {
            return Err(Error::Config("scaling.input_dim in 1..=1024 and scaling.n_train in 2..=10000".into()));
        }
        if self.steps == 0 || self.steps > 1_000_000 || !(1..=100).contains(&self.trials) {
            return Err(Error::Config("scaling.steps in 1..=10^6 and scaling.trials in 1..=100".into()));
        }
        if !(self.lr_factor > 0.0 && self.lr_factor < 1.0) {
            return Err(Error::Config("scaling.lr_factor must be in (0, 1)".into()));
        }
        let widest = self.widths.iter().copied().max().unwrap_or(0);
        crate::data::memory::check_alloc(
            8 * (self.n_train * self.n_train + 4 * self.n_train * widest + 6 * widest * (self.input_dim + 1)),
            "the scaling table's widest network (tangent kernel, node values, parameter copies)",
        )?;
        Ok(())
    }
}

/// The particle picture's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticleConfig {
    /// Student width (even).
    pub width: usize,
    /// Training points on the unit circle.
    pub n_train: usize,
    /// The scales tau (a small and a large one).
    #[serde(with = "crate::data::json_f64::vec")]
    pub scales: Vec<f64>,
    /// GD steps.
    pub steps: u64,
    /// Positions recorded every this many steps.
    pub every: u64,
    /// Step size as a fraction of 2N / lambda_max(K_0).
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
}

impl ParticleConfig {
    /// m = 16, tau = 0.01 and 100.
    pub fn full() -> ParticleConfig {
        ParticleConfig {
            width: 16,
            n_train: 100,
            scales: vec![0.01, 100.0],
            steps: 20_000,
            every: 100,
            lr_factor: 0.25,
        }
    }

    /// Fewer steps.
    pub fn quick() -> ParticleConfig {
        ParticleConfig { steps: 6000, ..Self::full() }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.width < 2 || !self.width.is_multiple_of(2) || self.width > 256 {
            return Err(Error::Config("particles.width must be even and in 2..=256".into()));
        }
        if !(2..=10_000).contains(&self.n_train)
            || self.scales.is_empty()
            || self.scales.iter().any(|t| !(1e-6..=1e6).contains(t))
            || self.scales.windows(2).any(|w| w[1] <= w[0])
        {
            return Err(Error::Config(
                "particles.n_train in 2..=10000 and particles.scales increasing, in [1e-6, 1e6]".into(),
            ));
        }
        if self.steps == 0 || self.steps > 10_000_000 || self.every == 0 || self.steps / self.every > 10_000 {
            return Err(Error::Config("particles.steps in 1..=10^7, at most 10^4 records".into()));
        }
        if !(self.lr_factor > 0.0 && self.lr_factor < 1.0) {
            return Err(Error::Config("particles.lr_factor must be in (0, 1)".into()));
        }
        Ok(())
    }
}

/// One width's measurements (means over trials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WidthPoint {
    /// Width m.
    pub width: usize,
    /// ||h(w_0)||, mean-field.
    #[serde(with = "crate::data::json_f64")]
    pub init_meanfield: f64,
    /// ||h(w_0)||, lazy.
    #[serde(with = "crate::data::json_f64")]
    pub init_lazy: f64,
    /// Mean per-neuron displacement, mean-field.
    #[serde(with = "crate::data::json_f64")]
    pub displacement_meanfield: f64,
    /// Mean per-neuron displacement, lazy.
    #[serde(with = "crate::data::json_f64")]
    pub displacement_lazy: f64,
    /// Final training loss, mean-field.
    #[serde(with = "crate::data::json_f64")]
    pub loss_meanfield: f64,
    /// Final training loss, lazy.
    #[serde(with = "crate::data::json_f64")]
    pub loss_lazy: f64,
}

/// The scaling table with its fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WidthScaling {
    /// Per width.
    pub points: Vec<WidthPoint>,
    /// Fit of init_meanfield against m.
    pub fit_init_meanfield: PowerLawFit,
    /// Fit of init_lazy.
    pub fit_init_lazy: PowerLawFit,
    /// Fit of displacement_meanfield.
    pub fit_displacement_meanfield: PowerLawFit,
    /// Fit of displacement_lazy.
    pub fit_displacement_lazy: PowerLawFit,
}

/// Particle paths at each scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Particles {
    /// The scales.
    #[serde(with = "crate::data::json_f64::vec")]
    pub scales: Vec<f64>,
    /// The teacher's neurons t_k (unit vectors) and their output signs.
    pub teacher: Vec<(f64, f64, f64)>,
    /// paths[s][j]: the positions p_j of neuron j at scale s, every `every` steps.
    pub paths: Vec<Vec<Vec<(f64, f64)>>>,
    /// sign(a_j) at the end, per scale.
    pub signs: Vec<Vec<f64>>,
    /// sum_j |p_j(T) - p_j(0)| / sum_j |p_j(0)| per scale.
    #[serde(with = "crate::data::json_f64::vec")]
    pub relative_movement: Vec<f64>,
    /// Mass-weighted mean cosine between each particle and the nearest teacher neuron of its sign, per scale.
    #[serde(with = "crate::data::json_f64::vec")]
    pub alignment: Vec<f64>,
    /// Final training loss per scale.
    #[serde(with = "crate::data::json_f64::vec")]
    pub final_loss: Vec<f64>,
}

/// The largest eigenvalue of the (symmetrized) empirical NTK on x.
fn lambda_max(net: &crate::net::Mlp, x: faer::MatRef<'_, f64>) -> Result<f64> {
    let k = net.empirical_ntk(x, None, NtkOutputs::Trace)?;
    max_eigenvalue(symmetrized(&k).as_ref())
}

fn rms(f: &Mat<f64>) -> f64 {
    ((0..f.nrows()).map(|i| f[(i, 0)] * f[(i, 0)]).sum::<f64>() / f.nrows() as f64).sqrt()
}

/// The scaling table; one checkpointed step per width.
pub(crate) fn width_scaling(
    cfg: &LazyConfig,
    ctx: &mut Context,
    done: &mut usize,
    total: usize,
) -> Result<WidthScaling> {
    let c = &cfg.scaling;
    let seed = derive_seed(cfg.seed, SCALING_STREAM);
    let (data, _) = teacher_data(c.n_train, 1, c.input_dim, cfg.teacher_neurons, derive_seed(seed, 0))?;
    let n = c.n_train as f64;
    let mut points = Vec::new();
    for &m in &c.widths {
        let p: WidthPoint = ctx.step(&format!("scaling,width={m}"), || {
            let mut acc = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            for trial in 0..c.trials {
                let s = derive_seed(derive_seed(seed, 1 + m as u64), trial as u64);
                let lazy0 = student(c.input_dim, m, Parameterization::Ntk, false, s)?;
                let mf0 = student(c.input_dim, m, Parameterization::MeanField, false, s)?;
                let eta = c.lr_factor * 2.0 * n / lambda_max(&lazy0, data.x.as_ref())?;
                for (k, (net0, lr)) in [(&mf0, eta * m as f64), (&lazy0, eta)].into_iter().enumerate() {
                    acc[k].push(rms(&net0.forward(data.x.as_ref())?));
                    let mut net = net0.clone();
                    let res = train_with_progress(
                        &mut net,
                        &data,
                        &TrainConfig::gd(lr, c.steps),
                        &ProbeConfig::loss_only(c.steps),
                        |_| Ok(()),
                        |_, _| Ok(()),
                    )?;
                    if matches!(res.status, crate::train::Status::Diverged { .. }) {
                        return Err(Error::Numerical(format!(
                            "scaling: GD diverged at width {m}; lower scaling.lr_factor"
                        )));
                    }
                    acc[2 + k].push(neuron_displacement(net.params(), net0.params(), m, c.input_dim));
                    acc[4 + k].push(res.records.last().map_or(f64::NAN, |r| r.loss));
                }
            }
            let mean = |v: &[f64]| mean_std(v).0;
            Ok(WidthPoint {
                width: m,
                init_meanfield: mean(&acc[0]),
                init_lazy: mean(&acc[1]),
                displacement_meanfield: mean(&acc[2]),
                displacement_lazy: mean(&acc[3]),
                loss_meanfield: mean(&acc[4]),
                loss_lazy: mean(&acc[5]),
            })
        })?;
        points.push(p);
        *done += 1;
        ctx.progress(*done, total);
    }
    let ms: Vec<f64> = points.iter().map(|p| p.width as f64).collect();
    let fit = |f: &dyn Fn(&WidthPoint) -> f64| fit_power_law(&ms, &points.iter().map(f).collect::<Vec<_>>());
    Ok(WidthScaling {
        fit_init_meanfield: fit(&|p| p.init_meanfield)?,
        fit_init_lazy: fit(&|p| p.init_lazy)?,
        fit_displacement_meanfield: fit(&|p| p.displacement_meanfield)?,
        fit_displacement_lazy: fit(&|p| p.displacement_lazy)?,
        points,
    })
}

/// The plane's teacher: neurons t_k at angles theta_0 + 1.2 k (theta_0 uniform), all with output weight +1, and
/// inputs at uniform angles on the unit circle. Directions spread over less than a half-turn and positive weights
/// keep the teacher identifiable: with directions summing to zero (e.g. 120 degrees apart) sum_k relu(t_k.x) =
/// sum_k relu(-t_k.x), and the particles settle on other, equally good, directions.
fn plane_teacher(n: usize, neurons: usize, seed: u64) -> Result<(crate::data::Dataset, Mat<f64>)> {
    let mut r = rng(seed);
    let u = Uniform::new(0.0, std::f64::consts::TAU).map_err(|e| Error::Numerical(e.to_string()))?;
    let theta0: f64 = u.sample(&mut r);
    let t = Mat::from_fn(neurons, 2, |k, j| {
        let a = theta0 + 1.2 * k as f64;
        if j == 0 {
            a.cos()
        } else {
            a.sin()
        }
    });
    let angles: Vec<f64> = (0..n + 1).map(|_| u.sample(&mut r)).collect();
    let x = Mat::from_fn(n + 1, 2, |i, j| if j == 0 { angles[i].cos() } else { angles[i].sin() });
    let y = Mat::from_fn(n + 1, 1, |i, _| {
        (0..neurons).map(|k| (t[(k, 0)] * x[(i, 0)] + t[(k, 1)] * x[(i, 1)]).max(0.0)).sum::<f64>()
    });
    let ds = crate::data::Dataset::new(x.as_ref().subrows(0, n).to_owned(), y.as_ref().subrows(0, n).to_owned())?
        .with_test(x.as_ref().subrows(n, 1).to_owned(), y.as_ref().subrows(n, 1).to_owned())?;
    Ok((ds, t))
}

fn positions(p: &[f64], m: usize, tau: f64) -> Vec<(f64, f64)> {
    let c = tau / (m as f64).sqrt();
    (0..m).map(|j| (c * p[2 * m + j].abs() * p[2 * j], c * p[2 * m + j].abs() * p[2 * j + 1])).collect()
}

/// The particle picture; one checkpointed step per scale.
pub(crate) fn particles(cfg: &LazyConfig, ctx: &mut Context, done: &mut usize, total: usize) -> Result<Particles> {
    let c = &cfg.particles;
    let seed = derive_seed(cfg.seed, PARTICLE_STREAM);
    let (data, t) = plane_teacher(c.n_train, cfg.teacher_neurons.min(3), derive_seed(seed, 0))?;
    let m = c.width;
    let net0 = student(2, m, Parameterization::Ntk, true, derive_seed(seed, 1))?;
    let eta = c.lr_factor * 2.0 * c.n_train as f64 / lambda_max(&net0, data.x.as_ref())?;
    let teacher: Vec<(f64, f64, f64)> = (0..t.nrows()).map(|k| (t[(k, 0)], t[(k, 1)], 1.0)).collect();
    let mut out = Particles {
        scales: c.scales.clone(),
        teacher: teacher.clone(),
        paths: vec![],
        signs: vec![],
        relative_movement: vec![],
        alignment: vec![],
        final_loss: vec![],
    };
    for &tau in &c.scales {
        type Run = (Vec<Vec<(f64, f64)>>, Vec<f64>, f64);
        let (paths, signs, loss): Run = ctx.step(&format!("particles,tau={tau:e}"), || {
            let mut net = net0.clone();
            net.alpha = tau;
            let mut paths: Vec<Vec<(f64, f64)>> =
                positions(net0.params(), m, tau).into_iter().map(|p| vec![p]).collect();
            let res = train_with_progress(
                &mut net,
                &data,
                &TrainConfig::gd(step_on_loss(eta, tau), c.steps),
                &ProbeConfig::loss_only(c.steps),
                |_| Ok(()),
                |s, w| {
                    if s % c.every == 0 || s == c.steps {
                        for (j, p) in positions(w, m, tau).into_iter().enumerate() {
                            paths[j].push(p);
                        }
                    }
                    Ok(())
                },
            )?;
            let signs = (0..m).map(|j| net.params()[2 * m + j].signum()).collect();
            Ok((paths, signs, res.records.last().map_or(f64::NAN, |r| r.loss)))
        })?;
        let norm = |p: (f64, f64)| p.0.hypot(p.1);
        let start: f64 = paths.iter().map(|p| norm(p[0])).sum();
        let moved: f64 = paths.iter().map(|p| norm((p[p.len() - 1].0 - p[0].0, p[p.len() - 1].1 - p[0].1))).sum();
        // Particles whose sign no teacher neuron has (a_j < 0 here) are left out: they shrink to 0.
        let (mut wsum, mut csum) = (0.0, 0.0);
        for (path, sign) in paths.iter().zip(&signs) {
            let p = path[path.len() - 1];
            let r = norm(p);
            let best = teacher
                .iter()
                .filter(|tk| tk.2 == *sign)
                .map(|tk| (p.0 * tk.0 + p.1 * tk.1) / r.max(f64::MIN_POSITIVE))
                .reduce(f64::max);
            if let Some(b) = best {
                wsum += r;
                csum += r * b;
            }
        }
        out.relative_movement.push(moved / start.max(f64::MIN_POSITIVE));
        out.alignment.push(csum / wsum.max(f64::MIN_POSITIVE));
        out.final_loss.push(loss);
        out.paths.push(paths);
        out.signs.push(signs);
        *done += 1;
        ctx.progress(*done, total);
    }
    Ok(out)
}
