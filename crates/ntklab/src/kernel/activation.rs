//! Pointwise activations: the finite function (value, first and second derivative) and its infinite-width
//! dual (T, Tdot) for a bivariate Gaussian, in closed form where one exists and by Gauss–Hermite otherwise.
//!
//! Conventions (neural-tangents): for (u, v) ~ N(0, [[s11, s12], [s12, s22]]),
//! `T = E[phi(u) phi(v)]` and `Tdot = E[phi'(u) phi'(v)]`.

use std::f64::consts::{FRAC_1_SQRT_2, PI};
use std::fmt;

use super::quadrature::{EluDual, GaussHermite, StripTrapezoid};
use super::spec::Call;
use crate::{Error, Result};

/// Gauss–Hermite degree used for activations without a closed-form dual when none is given.
pub const DEFAULT_QUAD_DEG: usize = 48;

/// Scale in neural-tangents' `Sigmoid_like`: `0.5 * erf(x / 2.4020563531719796) + 0.5`.
const SIGMOID_LIKE_SCALE: f64 = 2.402_056_353_171_979_6;

/// A pointwise nonlinearity. Each knows its finite self (`apply`, `derivative`, `second_derivative`)
/// and its infinite-width self (`dual`).
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// x for x > 0, a x otherwise.
    LeakyRelu { a: f64 },
    /// a min(x, 0) + b max(x, 0) (neural-tangents `ABRelu`).
    AbRelu { a: f64, b: f64 },
    /// |x|.
    Abs,
    /// a erf(b x) + c.
    Erf { a: f64, b: f64, c: f64 },
    /// 0.5 erf(x / 2.4020563531719796) + 0.5 (neural-tangents `Sigmoid_like`).
    SigmoidLike,
    /// x Phi(x), the exact (not tanh-approximated) GELU.
    Gelu,
    /// a sin(b x + c).
    Sin { a: f64, b: f64, c: f64 },
    /// a cos(b x + c).
    Cos { a: f64, b: f64, c: f64 },
    /// x.
    Identity,
    /// sqrt(2) sin(sqrt(2 gamma) x + pi/4), whose NNGP is exp(-gamma |x - x'|^2)-like (neural-tangents `Rbf`).
    Rbf { gamma: f64 },
    /// a exp(b x).
    Exp { a: f64, b: f64 },
    /// x^k, k <= 5.
    Monomial { k: u32 },
    /// sign(x) (derivative 0 almost everywhere, so its NTK contribution is 0).
    Sign,
    /// tanh(x) (quadrature).
    Tanh,
    /// ln(1 + e^x) (quadrature).
    Softplus,
    /// x sigmoid(x) (quadrature).
    Silu,
    /// x for x > 0, alpha (e^x - 1) otherwise (quadrature).
    Elu { alpha: f64 },
    /// Any of the above with its dual forced through Gauss–Hermite quadrature of the given degree.
    Quad { inner: Box<Activation>, deg: usize },
}

/// The logistic function 1 / (1 + e^-x), without overflow for large |x|.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[inline]
fn std_normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

#[inline]
fn std_normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

/// Coefficient of He_m in the Hermite expansion of x^k: k! / (m! ((k-m)/2)! 2^((k-m)/2)).
fn monomial_hermite_coef(k: u32, m: u32) -> f64 {
    let fact = |n: u32| (1..=n).map(|i| i as f64).product::<f64>();
    let j = (k - m) / 2;
    fact(k) / (fact(m) * fact(j) * 2f64.powi(j as i32))
}

/// E[u^k v^k] for (u, v) ~ N(0, [[s11, s12], [s12, s22]]), via Mehler: sum_m c_{k,m}^2 m! s12^m (s11 s22)^((k-m)/2).
fn monomial_moment(k: u32, s11: f64, s12: f64, s22: f64) -> f64 {
    let fact = |n: u32| (1..=n).map(|i| i as f64).product::<f64>();
    let q = s11 * s22;
    let mut m = k % 2;
    let mut acc = 0.0;
    while m <= k {
        let c = monomial_hermite_coef(k, m);
        acc += c * c * fact(m) * s12.powi(m as i32) * q.powi(((k - m) / 2) as i32);
        m += 2;
    }
    acc
}

/// Degree-1 arc-cosine kernel (Cho & Saul 2009): E[relu(u) relu(v)] and E[1{u>0} 1{v>0}].
///
/// T = sqrt(s11 s22) (sin theta + (pi - theta) cos theta) / (2 pi) with sin theta taken from the same clamped
/// cos theta as theta itself: near identical inputs (cos -> 1) the two terms then cancel to O(theta^3), so
/// rounding noise in cos theta does not leak into T (it would at O(theta) if sin theta came from s11 s22 - s12^2).
#[inline]
pub fn relu_dual(s11: f64, s12: f64, s22: f64) -> (f64, f64) {
    let q = s11 * s22;
    if q <= 0.0 {
        return (0.0, 0.25);
    }
    let sq = q.sqrt();
    let cos = (s12 / sq).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let sin = ((1.0 - cos) * (1.0 + cos)).sqrt();
    let t = sq * (sin + (PI - theta) * cos) / (2.0 * PI);
    let tdot = (PI - theta) / (2.0 * PI);
    (t, tdot)
}

impl Activation {
    /// phi(x).
    #[inline]
    pub fn apply(&self, x: f64) -> f64 {
        use Activation::*;
        match self {
            Relu => x.max(0.0),
            LeakyRelu { a } => {
                if x > 0.0 {
                    x
                } else {
                    a * x
                }
            }
            AbRelu { a, b } => {
                if x > 0.0 {
                    b * x
                } else {
                    a * x
                }
            }
            Abs => x.abs(),
            Erf { a, b, c } => a * libm::erf(b * x) + c,
            SigmoidLike => 0.5 * libm::erf(x / SIGMOID_LIKE_SCALE) + 0.5,
            Gelu => x * std_normal_cdf(x),
            Sin { a, b, c } => a * (b * x + c).sin(),
            Cos { a, b, c } => a * (b * x + c).cos(),
            Identity => x,
            Rbf { gamma } => 2f64.sqrt() * ((2.0 * gamma).sqrt() * x + PI / 4.0).sin(),
            Exp { a, b } => a * (b * x).exp(),
            Monomial { k } => x.powi(*k as i32),
            Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Tanh => x.tanh(),
            Softplus => {
                if x > 30.0 {
                    x + (-x).exp()
                } else {
                    x.exp().ln_1p()
                }
            }
            Silu => x * sigmoid(x),
            Elu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
            Quad { inner, .. } => inner.apply(x),
        }
    }

    /// phi'(x) (the a.e. derivative for piecewise-linear functions; 0 at kinks' left side).
    #[inline]
    pub fn derivative(&self, x: f64) -> f64 {
        use Activation::*;
        match self {
            Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            LeakyRelu { a } => {
                if x > 0.0 {
                    1.0
                } else {
                    *a
                }
            }
            AbRelu { a, b } => {
                if x > 0.0 {
                    *b
                } else {
                    *a
                }
            }
            Abs => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Erf { a, b, .. } => a * b * 2.0 / PI.sqrt() * (-(b * x) * (b * x)).exp(),
            SigmoidLike => {
                let b = 1.0 / SIGMOID_LIKE_SCALE;
                0.5 * b * 2.0 / PI.sqrt() * (-(b * x) * (b * x)).exp()
            }
            Gelu => std_normal_cdf(x) + x * std_normal_pdf(x),
            Sin { a, b, c } => a * b * (b * x + c).cos(),
            Cos { a, b, c } => -a * b * (b * x + c).sin(),
            Identity => 1.0,
            Rbf { gamma } => {
                let w = (2.0 * gamma).sqrt();
                2f64.sqrt() * w * (w * x + PI / 4.0).cos()
            }
            Exp { a, b } => a * b * (b * x).exp(),
            Monomial { k } => {
                if *k == 0 {
                    0.0
                } else {
                    *k as f64 * x.powi(*k as i32 - 1)
                }
            }
            Sign => 0.0,
            Tanh => {
                let t = x.tanh();
                1.0 - t * t
            }
            Softplus => sigmoid(x),
            Silu => {
                let s = sigmoid(x);
                s + x * s * (1.0 - s)
            }
            Elu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha * x.exp()
                }
            }
            Quad { inner, .. } => inner.derivative(x),
        }
    }

    /// phi''(x) (0 for piecewise-linear functions away from the kink).
    #[inline]
    pub fn second_derivative(&self, x: f64) -> f64 {
        use Activation::*;
        match self {
            Relu | LeakyRelu { .. } | AbRelu { .. } | Abs | Identity | Sign => 0.0,
            Erf { b, .. } => -2.0 * b * b * x * self.derivative(x),
            SigmoidLike => {
                let b = 1.0 / SIGMOID_LIKE_SCALE;
                -2.0 * b * b * x * self.derivative(x)
            }
            Gelu => std_normal_pdf(x) * (2.0 - x * x),
            Sin { a, b, c } => -a * b * b * (b * x + c).sin(),
            Cos { a, b, c } => -a * b * b * (b * x + c).cos(),
            Rbf { gamma } => {
                let w = (2.0 * gamma).sqrt();
                -(2f64.sqrt()) * w * w * (w * x + PI / 4.0).sin()
            }
            Exp { a, b } => a * b * b * (b * x).exp(),
            Monomial { k } => {
                if *k < 2 {
                    0.0
                } else {
                    (*k as f64) * (*k as f64 - 1.0) * x.powi(*k as i32 - 2)
                }
            }
            Tanh => {
                let t = x.tanh();
                -2.0 * t * (1.0 - t * t)
            }
            Softplus => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Silu => {
                let s = sigmoid(x);
                s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
            }
            Elu { alpha } => {
                if x > 0.0 {
                    0.0
                } else {
                    alpha * x.exp()
                }
            }
            Quad { inner, .. } => inner.second_derivative(x),
        }
    }

    /// Whether `dual` is available in closed form (otherwise Gauss–Hermite quadrature is used).
    pub fn has_closed_form(&self) -> bool {
        !matches!(
            self,
            Activation::Tanh
                | Activation::Softplus
                | Activation::Silu
                | Activation::Elu { .. }
                | Activation::Quad { .. }
        )
    }

    /// Whether the activation is positively homogeneous of degree 1 (ReLU family, identity).
    pub fn is_piecewise_linear(&self) -> bool {
        use Activation::*;
        match self {
            Relu | LeakyRelu { .. } | AbRelu { .. } | Abs | Identity => true,
            Quad { inner, .. } => inner.is_piecewise_linear(),
            _ => false,
        }
    }

    /// Closed-form (T, Tdot) for a bivariate Gaussian with covariance [[s11, s12], [s12, s22]];
    /// `None` for activations without one. Formulas:
    /// * ReLU family: `T = a b s12 + (b-a)^2 T_relu`, `Tdot = a b + (b-a)^2 (pi - theta)/(2 pi)` (arc-cosine, Cho & Saul 2009).
    /// * Erf: `T = a^2 (2/pi) asin(2b^2 s12 / sqrt((1+2b^2 s11)(1+2b^2 s22))) + c^2` (Williams 1997).
    /// * GELU: Price's theorem on the erf form; Sin/Cos/Rbf/Exp: Gaussian characteristic functions;
    ///   Monomial: Mehler's Hermite expansion.
    #[inline]
    pub fn closed_dual(&self, s11: f64, s12: f64, s22: f64) -> Option<(f64, f64)> {
        use Activation::*;
        let abrelu = |a: f64, b: f64| {
            let (t, td) = relu_dual(s11, s12, s22);
            let d = (b - a) * (b - a);
            (a * b * s12 + d * t, a * b + d * td)
        };
        let erf = |a: f64, b: f64, c: f64| {
            let b2 = b * b;
            let p1 = 1.0 + 2.0 * b2 * s11;
            let p2 = 1.0 + 2.0 * b2 * s22;
            let arg = (2.0 * b2 * s12 / (p1 * p2).sqrt()).clamp(-1.0, 1.0);
            let t = a * a * (2.0 / PI) * arg.asin() + c * c;
            // (1 + 2b^2 s11)(1 + 2b^2 s22) - 4b^4 s12^2 expanded so that no two large terms cancel: at large
            // variance the product form loses everything (on the diagonal it is exactly 1 + 4 b^2 s).
            let det = (1.0 + 2.0 * b2 * (s11 + s22) + 4.0 * b2 * b2 * (s11 * s22 - s12 * s12).max(0.0))
                .max(f64::MIN_POSITIVE);
            let td = 4.0 * a * a * b2 / PI / det.sqrt();
            (t, td)
        };
        let sin = |a: f64, b: f64, c: f64| {
            let b2 = b * b;
            // exp(-b^2 (s11 + s22) / 2) exp(+-b^2 s12) as single exponents (<= 0 for a covariance): the split form
            // overflowed to 0 x inf = NaN at large variance.
            let ep = (-0.5 * b2 * (s11 + s22 - 2.0 * s12)).exp();
            let em = (-0.5 * b2 * (s11 + s22 + 2.0 * s12)).exp();
            let c2 = (2.0 * c).cos();
            (0.5 * a * a * (ep - c2 * em), 0.5 * a * a * b2 * (ep + c2 * em))
        };
        Some(match self {
            Relu => relu_dual(s11, s12, s22),
            LeakyRelu { a } => abrelu(*a, 1.0),
            AbRelu { a, b } => abrelu(*a, *b),
            Abs => abrelu(-1.0, 1.0),
            Erf { a, b, c } => erf(*a, *b, *c),
            SigmoidLike => erf(0.5, 1.0 / SIGMOID_LIKE_SCALE, 0.5),
            Gelu => {
                let a = 1.0 + s11;
                let b = 1.0 + s22;
                let ab = a * b;
                let r = (ab - s12 * s12).max(f64::MIN_POSITIVE).sqrt();
                let asn = (s12 / ab.sqrt()).clamp(-1.0, 1.0).asin();
                let t = 0.25 * s12 + (s12 * asn + r * (s11 * s22 - 1.0) / ab + 1.0 / r) / (2.0 * PI);
                let td = 0.25 + (asn + s12 / (r * r * r) + s12 * (1.0 / a + 1.0 / b) / r) / (2.0 * PI);
                (t, td)
            }
            Sin { a, b, c } => sin(*a, *b, *c),
            Cos { a, b, c } => sin(*a, *b, *c + PI / 2.0),
            Identity => (s12, 1.0),
            Rbf { gamma } => {
                let t = (-gamma * (s11 + s22 - 2.0 * s12)).exp();
                (t, 2.0 * gamma * t)
            }
            Exp { a, b } => {
                let t = a * a * (0.5 * b * b * (s11 + s22 + 2.0 * s12)).exp();
                (t, b * b * t)
            }
            Monomial { k } => {
                let t = monomial_moment(*k, s11, s12, s22);
                let td = if *k == 0 { 0.0 } else { (*k as f64).powi(2) * monomial_moment(*k - 1, s11, s12, s22) };
                (t, td)
            }
            Sign => {
                let q = s11 * s22;
                if q <= 0.0 {
                    (0.0, 0.0)
                } else {
                    ((2.0 / PI) * (s12 / q.sqrt()).clamp(-1.0, 1.0).asin(), 0.0)
                }
            }
            Tanh | Softplus | Silu | Elu { .. } | Quad { .. } => return None,
        })
    }

    /// A ready-to-evaluate dual (T, Tdot): the closed form; for `quad(fn, deg)`, the Gauss–Hermite rule of
    /// that degree; for tanh, softplus and SiLU (analytic in a strip), the variance-adapted trapezoidal rule
    /// ([`StripTrapezoid`], ~1e-12 relative where the 48-node Gauss–Hermite rule errs by up to 1e-3 at variance
    /// 5); for ELU (kinked at 0) the semi-analytic [`EluDual`] (Gauss–Hermite errs by ~1 % there); anything else
    /// by Gauss–Hermite of degree [`DEFAULT_QUAD_DEG`].
    pub fn dual(&self) -> Dual {
        use std::f64::consts::{FRAC_PI_2, PI};
        match self {
            Activation::Quad { inner, deg } => Dual::Quad { act: (**inner).clone(), rule: GaussHermite::new(*deg) },
            a if a.has_closed_form() => Dual::Closed(a.clone()),
            Activation::Tanh => Dual::Strip { act: Activation::Tanh, rule: StripTrapezoid::new(FRAC_PI_2) },
            a @ (Activation::Softplus | Activation::Silu) => {
                Dual::Strip { act: a.clone(), rule: StripTrapezoid::new(PI) }
            }
            Activation::Elu { alpha } => Dual::Elu(EluDual::new(*alpha)),
            a => Dual::Quad { act: a.clone(), rule: GaussHermite::new(DEFAULT_QUAD_DEG) },
        }
    }

    /// Parse one activation, e.g. `relu`, `leaky_relu(0.1)`, `erf(a=1,b=2,c=0)`, `quad(tanh, 64)`.
    pub fn parse(text: &str) -> Result<Activation> {
        let call = Call::parse(text)?;
        Self::from_call(&call)
    }

    /// Build from a parsed call (see [`Activation::parse`]).
    pub fn from_call(call: &Call) -> Result<Activation> {
        use Activation::*;
        let f = |p: &[(&str, f64)]| call.floats(p);
        let act = match call.name.as_str() {
            "relu" => {
                f(&[])?;
                Relu
            }
            "leaky_relu" | "leakyrelu" => LeakyRelu { a: f(&[("a", 0.01)])?[0] },
            "abrelu" | "ab_relu" => {
                let v = f(&[("a", 0.0), ("b", 1.0)])?;
                AbRelu { a: v[0], b: v[1] }
            }
            "abs" => {
                f(&[])?;
                Abs
            }
            "erf" => {
                let v = f(&[("a", 1.0), ("b", 1.0), ("c", 0.0)])?;
                Erf { a: v[0], b: v[1], c: v[2] }
            }
            "sigmoid_like" => {
                f(&[])?;
                SigmoidLike
            }
            "gelu" => {
                f(&[])?;
                Gelu
            }
            "sin" => {
                let v = f(&[("a", 1.0), ("b", 1.0), ("c", 0.0)])?;
                Sin { a: v[0], b: v[1], c: v[2] }
            }
            "cos" => {
                let v = f(&[("a", 1.0), ("b", 1.0), ("c", 0.0)])?;
                Cos { a: v[0], b: v[1], c: v[2] }
            }
            "identity" | "linear" => {
                f(&[])?;
                Identity
            }
            "rbf" => {
                let g = f(&[("gamma", 1.0)])?[0];
                if g <= 0.0 {
                    return Err(Error::parse(&call.text, "rbf needs gamma > 0"));
                }
                Rbf { gamma: g }
            }
            "exp" => {
                let v = f(&[("a", 1.0), ("b", 1.0)])?;
                Exp { a: v[0], b: v[1] }
            }
            "monomial" => {
                let k = f(&[("k", 1.0)])?[0];
                if k.fract() != 0.0 || !(0.0..=5.0).contains(&k) {
                    return Err(Error::parse(&call.text, "monomial degree k must be an integer in 0..=5"));
                }
                Monomial { k: k as u32 }
            }
            "sign" => {
                f(&[])?;
                Sign
            }
            "tanh" => {
                f(&[])?;
                Tanh
            }
            "softplus" => {
                f(&[])?;
                Softplus
            }
            "silu" | "swish" => {
                f(&[])?;
                Silu
            }
            "elu" => Elu { alpha: f(&[("alpha", 1.0)])?[0] },
            "quad" => {
                let slots = call.bind(&["fn", "deg"])?;
                let inner = slots[0]
                    .as_ref()
                    .ok_or_else(|| Error::parse(&call.text, "quad needs a function, e.g. quad(tanh, 64)"))?;
                let inner = Activation::parse(inner)?;
                if matches!(inner, Quad { .. }) {
                    return Err(Error::parse(&call.text, "quad cannot be nested"));
                }
                let deg = match &slots[1] {
                    None => DEFAULT_QUAD_DEG,
                    Some(d) => d
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|d| (2..=512).contains(d))
                        .ok_or_else(|| Error::parse(&call.text, "quadrature degree must be an integer in 2..=512"))?,
                };
                Quad { inner: Box::new(inner), deg }
            }
            other => {
                return Err(Error::parse(
                    &call.text,
                    format!(
                        "unknown activation `{other}` (known: relu, leaky_relu(a), abrelu(a,b), abs, erf(a,b,c), \
                         sigmoid_like, gelu, sin(a,b,c), cos(a,b,c), identity, rbf(gamma), exp(a,b), monomial(k), sign, \
                         tanh, softplus, silu, elu(alpha), quad(fn, deg))"
                    ),
                ))
            }
        };
        Ok(act)
    }

    /// Every activation name the parser knows, with default parameters (for tests and help text).
    pub fn catalogue() -> Vec<Activation> {
        use Activation::*;
        vec![
            Relu,
            LeakyRelu { a: 0.1 },
            AbRelu { a: -0.3, b: 0.8 },
            Abs,
            Erf { a: 1.3, b: 0.7, c: 0.2 },
            SigmoidLike,
            Gelu,
            Sin { a: 1.1, b: 0.9, c: 0.3 },
            Cos { a: 0.8, b: 1.2, c: -0.4 },
            Identity,
            Rbf { gamma: 0.6 },
            Exp { a: 0.7, b: 0.5 },
            Monomial { k: 0 },
            Monomial { k: 1 },
            Monomial { k: 2 },
            Monomial { k: 3 },
            Monomial { k: 4 },
            Monomial { k: 5 },
            Sign,
            Tanh,
            Softplus,
            Silu,
            Elu { alpha: 0.8 },
        ]
    }
}

impl fmt::Display for Activation {
    /// The canonical textual form, parseable by [`Activation::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Activation::*;
        match self {
            Relu => write!(f, "relu"),
            LeakyRelu { a } => write!(f, "leaky_relu({a})"),
            AbRelu { a, b } => write!(f, "abrelu({a},{b})"),
            Abs => write!(f, "abs"),
            Erf { a, b, c } => write!(f, "erf({a},{b},{c})"),
            SigmoidLike => write!(f, "sigmoid_like"),
            Gelu => write!(f, "gelu"),
            Sin { a, b, c } => write!(f, "sin({a},{b},{c})"),
            Cos { a, b, c } => write!(f, "cos({a},{b},{c})"),
            Identity => write!(f, "identity"),
            Rbf { gamma } => write!(f, "rbf({gamma})"),
            Exp { a, b } => write!(f, "exp({a},{b})"),
            Monomial { k } => write!(f, "monomial({k})"),
            Sign => write!(f, "sign"),
            Tanh => write!(f, "tanh"),
            Softplus => write!(f, "softplus"),
            Silu => write!(f, "silu"),
            Elu { alpha } => write!(f, "elu({alpha})"),
            Quad { inner, deg } => write!(f, "quad({inner},{deg})"),
        }
    }
}

/// A dual ready for evaluation on many covariance triples.
#[derive(Debug, Clone)]
pub enum Dual {
    /// Closed form.
    Closed(Activation),
    /// Gauss–Hermite product rule over the Cholesky factor of the 2x2 covariance.
    Quad { act: Activation, rule: GaussHermite },
    /// Trapezoidal product rule with steps following the variances, for activations analytic in a strip.
    Strip { act: Activation, rule: StripTrapezoid },
    /// ELU: inner expectation in closed form, outer by Gauss–Legendre on each side of the kink.
    Elu(EluDual),
}

impl Dual {
    /// (T, Tdot) = (E[phi(u)phi(v)], E[phi'(u)phi'(v)]) for (u,v) ~ N(0, `[[s11, s12], [s12, s22]]`).
    #[inline]
    pub fn eval(&self, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
        match self {
            Dual::Closed(a) => a.closed_dual(s11, s12, s22).expect("closed form exists by construction"),
            Dual::Quad { act, rule } => rule.dual(act, s11, s12, s22),
            Dual::Strip { act, rule } => rule.dual(act, s11, s12, s22),
            Dual::Elu(rule) => rule.dual(s11, s12, s22),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        // Central differences with h = 1e-5 have truncation error ~ h^2 |phi'''| / 6 ~ 1e-10 and rounding ~ 1e-11/h;
        // 1e-6 absolute leaves margin. Points avoid the kinks of piecewise-linear functions.
        let h = 1e-5;
        for act in Activation::catalogue() {
            for &x in &[-1.7, -0.45, 0.33, 0.9, 2.2] {
                let fd1 = (act.apply(x + h) - act.apply(x - h)) / (2.0 * h);
                let fd2 = (act.derivative(x + h) - act.derivative(x - h)) / (2.0 * h);
                assert!(
                    (fd1 - act.derivative(x)).abs() < 1e-6 * (1.0 + fd1.abs()),
                    "{act} phi' at {x}: {fd1} vs {}",
                    act.derivative(x)
                );
                assert!((fd2 - act.second_derivative(x)).abs() < 1e-6 * (1.0 + fd2.abs()), "{act} phi'' at {x}");
            }
        }
    }

    #[test]
    fn parse_display_roundtrip() {
        for act in Activation::catalogue() {
            let s = act.to_string();
            assert_eq!(Activation::parse(&s).unwrap(), act, "{s}");
        }
        assert_eq!(
            Activation::parse("quad(elu(alpha=0.5), 16)").unwrap(),
            Activation::Quad { inner: Box::new(Activation::Elu { alpha: 0.5 }), deg: 16 }
        );
        let e = Activation::parse("swoosh").unwrap_err().to_string();
        assert!(e.contains("swoosh") && e.contains("unknown activation"), "{e}");
        assert!(Activation::parse("monomial(7)").is_err());
        assert!(Activation::parse("quad(tanh, 1)").is_err());
        assert!(Activation::parse("relu(3)").is_err());
    }

    #[test]
    fn relu_arccos_hand_values() {
        // Orthogonal unit-variance inputs: theta = pi/2, T = 1/(2 pi), Tdot = 1/4.
        let (t, td) = relu_dual(1.0, 0.0, 1.0);
        assert!((t - 1.0 / (2.0 * PI)).abs() < 1e-15 && (td - 0.25).abs() < 1e-15);
        // Identical inputs: T = s/2, Tdot = 1/2.
        let (t, td) = relu_dual(3.0, 3.0, 3.0);
        assert!((t - 1.5).abs() < 1e-14 && (td - 0.5).abs() < 1e-15);
        // Opposite inputs: theta = pi, T = 0, Tdot = 0.
        let (t, td) = relu_dual(2.0, -2.0, 2.0);
        assert!(t.abs() < 1e-15 && td.abs() < 1e-15);
        // cos theta = 1/2: theta = pi/3, T = sqrt(s11 s22)/(2pi) (sqrt(3)/2 + (2pi/3)/2).
        let (t, td) = relu_dual(1.0, 1.0, 4.0);
        let want = 2.0 / (2.0 * PI) * (3f64.sqrt() / 2.0 + PI / 3.0);
        assert!((t - want).abs() < 1e-14 && (td - 1.0 / 3.0).abs() < 1e-15, "{t} {want}");
    }
}
