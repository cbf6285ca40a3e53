//! Pointwise activations: the finite function (value, first and second derivative) and its infinite-width
//! dual (T, Tdot) for a bivariate Gaussian, in closed form where one exists and by quadrature otherwise.
//!
//! Conventions (neural-tangents): for (u, v) ~ N(0, [[s11, s12], [s12, s22]]),
//! `T = E[phi(u) phi(v)]` and `Tdot = E[phi'(u) phi'(v)]`.
//!
//! Every activation is defined once, in the table at the end of the helpers below ([`activations!`]): its name
//! and aliases for the parser, its parameters with defaults, phi, phi', phi'', its dual (a closed form, or the
//! quadrature rule to use) and examples for the generic tests. The `Activation` enum, the parser, `Display`,
//! the [`REGISTRY`] and [`Activation::catalogue`] are generated from that table, so adding an activation is one
//! entry in this file (ARCHITECTURE.md, "How to add an activation").

use std::f64::consts::{FRAC_1_SQRT_2, FRAC_PI_2, PI};
use std::fmt;

use super::quadrature::{EluDual, GaussHermite, StripTrapezoid};
use super::spec::Call;
use crate::{Error, Result};

/// Gauss–Hermite degree used for activations without a closed-form dual when none is given.
pub const DEFAULT_QUAD_DEG: usize = 48;

/// Scale in neural-tangents' `Sigmoid_like`: `0.5 * erf(x / 2.4020563531719796) + 0.5`.
const SIGMOID_LIKE_SCALE: f64 = 2.402_056_353_171_979_6;

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

#[inline]
fn step(x: f64, below: f64, above: f64) -> f64 {
    if x > 0.0 {
        above
    } else {
        below
    }
}

#[inline]
fn signum0(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
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

/// s11 s22 - s12^2, the 2x2 covariance determinant, to about one ulp of the result (Kahan's difference of
/// products with fused multiply-adds): near colinear inputs at large variance the plain form cancels to noise.
#[inline]
pub fn det2(s11: f64, s22: f64, s12: f64) -> f64 {
    let p = s12 * s12;
    let e = s12.mul_add(s12, -p);
    s11.mul_add(s22, -p) - e
}

/// ABReLU family: `T = a b s12 + (b-a)^2 T_relu`, `Tdot = a b + (b-a)^2 (pi - theta)/(2 pi)`.
#[inline]
fn abrelu_dual(a: f64, b: f64, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
    let (t, td) = relu_dual(s11, s12, s22);
    let d = (b - a) * (b - a);
    (a * b * s12 + d * t, a * b + d * td)
}

/// a erf(b x) + c: `T = a^2 (2/pi) asin(2b^2 s12 / sqrt((1+2b^2 s11)(1+2b^2 s22))) + c^2` (Williams 1997).
#[inline]
fn erf_dual(a: f64, b: f64, c: f64, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
    let b2 = b * b;
    let p1 = 1.0 + 2.0 * b2 * s11;
    let p2 = 1.0 + 2.0 * b2 * s22;
    let arg = (2.0 * b2 * s12 / (p1 * p2).sqrt()).clamp(-1.0, 1.0);
    let t = a * a * (2.0 / PI) * arg.asin() + c * c;
    // (1 + 2b^2 s11)(1 + 2b^2 s22) - 4b^4 s12^2 expanded so that no two large terms cancel: at large
    // variance the product form loses everything (on the diagonal it is exactly 1 + 4 b^2 s).
    let det = (1.0 + 2.0 * b2 * (s11 + s22) + 4.0 * b2 * b2 * det2(s11, s22, s12).max(0.0)).max(f64::MIN_POSITIVE);
    let td = 4.0 * a * a * b2 / PI / det.sqrt();
    (t, td)
}

/// a sin(b x + c), by the Gaussian characteristic function.
#[inline]
fn sin_dual(a: f64, b: f64, c: f64, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
    let b2 = b * b;
    // exp(-b^2 (s11 + s22) / 2) exp(+-b^2 s12) as single exponents (<= 0 for a covariance): the split form
    // overflowed to 0 x inf = NaN at large variance.
    let ep = (-0.5 * b2 * (s11 + s22 - 2.0 * s12)).exp();
    let em = (-0.5 * b2 * (s11 + s22 + 2.0 * s12)).exp();
    let c2 = (2.0 * c).cos();
    (0.5 * a * a * (ep - c2 * em), 0.5 * a * a * b2 * (ep + c2 * em))
}

/// Exact GELU x Phi(x), by Price's theorem on the erf form. With a = 1 + s11, b = 1 + s22 and
/// r^2 = a b - s12^2 = 1 + s11 + s22 + (s11 s22 - s12^2):
/// `T = s12/4 + (s12 asin(s12/sqrt(ab)) + (s11 s22 r^2 + s12^2)/(ab r)) / (2 pi)` (the last term is
/// `r (s11 s22 - 1)/ab + 1/r` brought over one denominator, which cancels to O(q) at small variance), and
/// `Tdot = 1/4 + (asin(s12/sqrt(ab)) + s12/r^3 + s12 (1/a + 1/b)/r) / (2 pi)`.
#[inline]
fn gelu_dual(s11: f64, s12: f64, s22: f64) -> (f64, f64) {
    let a = 1.0 + s11;
    let b = 1.0 + s22;
    let ab = a * b;
    let r2 = (1.0 + s11 + s22 + det2(s11, s22, s12).max(0.0)).max(f64::MIN_POSITIVE);
    let r = r2.sqrt();
    let asn = (s12 / ab.sqrt()).clamp(-1.0, 1.0).asin();
    // (s11 s22 r^2 + s12^2) / (ab r) as products of ratios: no q^4 intermediate to overflow at large variance.
    let t = 0.25 * s12 + (s12 * asn + (s11 / a) * (s22 / b) * r + s12 * (s12 / ab) / r) / (2.0 * PI);
    let td = 0.25 + (asn + s12 / (r2 * r) + s12 * (1.0 / a + 1.0 / b) / r) / (2.0 * PI);
    (t, td)
}

/// sign(x): T = (2/pi) asin(cos theta), Tdot = 0.
#[inline]
fn sign_dual(s11: f64, s12: f64, s22: f64) -> (f64, f64) {
    let q = s11 * s22;
    if q <= 0.0 {
        (0.0, 0.0)
    } else {
        ((2.0 / PI) * (s12 / q.sqrt()).clamp(-1.0, 1.0).asin(), 0.0)
    }
}

/// How an activation without a closed-form dual is integrated (see [`Activation::dual`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuadratureRule {
    /// Gauss–Hermite of degree [`DEFAULT_QUAD_DEG`] (smooth activations).
    Hermite,
    /// The variance-adapted trapezoidal rule for functions analytic in the strip |Im z| < width
    /// ([`StripTrapezoid`], ~1e-12 relative where 48-node Gauss–Hermite errs by up to 1e-3 at variance 5).
    Strip(f64),
    /// ELU with this alpha: inner expectation in closed form, outer Gauss–Legendre on each side of the kink.
    Elu(f64),
}

/// One activation as the parser knows it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The canonical name (what `Display` writes).
    pub name: &'static str,
    /// Other names the parser accepts.
    pub aliases: &'static [&'static str],
    /// Parameters in positional order, with their defaults.
    pub params: &'static [(&'static str, f64)],
    /// One line on what it is.
    pub summary: &'static str,
}

impl Entry {
    /// `name(p1,p2)`: the call form with parameter names (for help and error texts).
    pub fn signature(&self) -> String {
        if self.params.is_empty() {
            self.name.to_string()
        } else {
            let p: Vec<&str> = self.params.iter().map(|p| p.0).collect();
            format!("{}({})", self.name, p.join(","))
        }
    }
}

/// Generates `Activation`, its per-activation methods, the parser, `Display`, [`REGISTRY`] and the catalogue
/// from one table. Each entry:
///
/// ```text
/// /// doc line(s)
/// Name { param = default, ... } "parser-name" | "alias" {
///     valid: <bool over the params> => "message",        (optional)
///     phi(x) = ..., dphi(x) = ..., d2phi(x) = ...,
///     closed(s11, s12, s22) = <(T, Tdot)>,               (or)  rule: QuadratureRule::...,
///     piecewise_linear: true,                            (optional; phi'' = 0 a.e.)
///     examples: [Activation::Name { .. }, ...],
/// }
/// ```
///
/// Parameters are f64 and bound by name inside every formula. Without `closed` and `rule` the dual is
/// Gauss–Hermite of degree [`DEFAULT_QUAD_DEG`].
macro_rules! activations {
    ($(
        $(#[doc = $doc:literal])*
        $var:ident $({ $($p:ident = $def:expr),* })? $name:literal $(| $alias:literal)* {
            $(valid: $valid:expr => $msg:literal,)?
            phi($x1:ident) = $phi:expr,
            dphi($x2:ident) = $dphi:expr,
            d2phi($x3:ident) = $d2phi:expr,
            $(closed($s1:ident, $s2:ident, $s3:ident) = $closed:expr,)?
            $(rule: $rule:expr,)?
            $(piecewise_linear: $pl:literal,)?
            examples: [$($ex:expr),* $(,)?],
        }
    )*) => {
        /// A pointwise nonlinearity. Each knows its finite self (`apply`, `derivative`, `second_derivative`)
        /// and its infinite-width self (`dual`). Generated from the table in `kernel/activation.rs`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Activation {
            $( $(#[doc = $doc])* $var $({ $($p: f64),* })?, )*
            /// Any of the above with its dual forced through Gauss–Hermite quadrature of the given degree.
            Quad { inner: Box<Activation>, deg: usize },
        }

        /// Every activation the parser knows (`quad(fn, deg)` aside), in table order.
        pub const REGISTRY: &[Entry] = &[
            $( Entry {
                name: $name,
                aliases: &[$($alias),*],
                params: &[$($( (stringify!($p), $def) ),*)?],
                summary: concat!($($doc),*),
            }, )*
        ];

        impl Activation {
            /// phi(x).
            #[inline]
            #[allow(unused_variables)]
            pub fn apply(&self, x: f64) -> f64 {
                match self {
                    $( Activation::$var $({ $($p),* })? => { $($(let $p = *$p;)*)? let $x1 = x; $phi } )*
                    Activation::Quad { inner, .. } => inner.apply(x),
                }
            }

            /// phi'(x) (the a.e. derivative for piecewise-linear functions; the left side's at kinks).
            #[inline]
            #[allow(unused_variables)]
            pub fn derivative(&self, x: f64) -> f64 {
                match self {
                    $( Activation::$var $({ $($p),* })? => { $($(let $p = *$p;)*)? let $x2 = x; $dphi } )*
                    Activation::Quad { inner, .. } => inner.derivative(x),
                }
            }

            /// phi''(x) (0 for piecewise-linear functions away from the kink).
            #[inline]
            #[allow(unused_variables)]
            pub fn second_derivative(&self, x: f64) -> f64 {
                match self {
                    $( Activation::$var $({ $($p),* })? => { $($(let $p = *$p;)*)? let $x3 = x; $d2phi } )*
                    Activation::Quad { inner, .. } => inner.second_derivative(x),
                }
            }

            /// Closed-form (T, Tdot) for a bivariate Gaussian with covariance [[s11, s12], [s12, s22]];
            /// `None` for activations without one (and for `quad(...)`).
            #[inline]
            #[allow(unused_variables, clippy::let_and_return)]
            pub fn closed_dual(&self, s11: f64, s12: f64, s22: f64) -> Option<(f64, f64)> {
                match self {
                    $( Activation::$var $({ $($p),* })? => {
                        $($(let $p = *$p;)*)?
                        let out: Option<(f64, f64)> = None;
                        $( let ($s1, $s2, $s3) = (s11, s12, s22); let out = Some($closed); )?
                        out
                    } )*
                    Activation::Quad { .. } => None,
                }
            }

            /// Whether `dual` is available in closed form (otherwise a quadrature rule is used).
            #[allow(unused_variables, clippy::let_and_return)]
            pub fn has_closed_form(&self) -> bool {
                match self {
                    $( Activation::$var { .. } => {
                        let closed = false;
                        $( let closed = { let _ = stringify!($closed); true }; )?
                        closed
                    } )*
                    Activation::Quad { .. } => false,
                }
            }

            /// The quadrature rule used when there is no closed form.
            #[allow(unused_variables, clippy::let_and_return)]
            pub fn quadrature_rule(&self) -> QuadratureRule {
                match self {
                    $( Activation::$var $({ $($p),* })? => {
                        $($(let $p = *$p;)*)?
                        let rule = QuadratureRule::Hermite;
                        $( let rule = $rule; )?
                        rule
                    } )*
                    Activation::Quad { .. } => QuadratureRule::Hermite,
                }
            }

            /// Whether phi'' = 0 almost everywhere (ReLU family, identity, sign).
            #[allow(unused_variables, clippy::let_and_return)]
            pub fn is_piecewise_linear(&self) -> bool {
                match self {
                    $( Activation::$var { .. } => {
                        let pl = false;
                        $( let pl = $pl; )?
                        pl
                    } )*
                    Activation::Quad { inner, .. } => inner.is_piecewise_linear(),
                }
            }

            /// Build from a parsed call (see [`Activation::parse`]): the name is looked up in [`REGISTRY`]'s
            /// table, parameters bind by position or name with the table's defaults.
            pub fn from_call(call: &Call) -> Result<Activation> {
                let name = call.name.as_str();
                if name == "quad" {
                    return Self::quad_from_call(call);
                }
                $( if name == $name $(|| name == $alias)* {
                    let values = call.floats(&[$($( (stringify!($p), $def) ),*)?])?;
                    #[allow(unused_mut, unused_variables)]
                    let mut values = values.into_iter();
                    $($( let $p = values.next().ok_or_else(|| Error::parse(&call.text, "missing parameter"))?; )*)?
                    $( if let false = $valid {
                        return Err(Error::parse(&call.text, $msg));
                    } )?
                    return Ok(Activation::$var $({ $($p),* })?);
                } )*
                let known: Vec<String> = REGISTRY.iter().map(Entry::signature).collect();
                Err(Error::parse(
                    &call.text,
                    format!("unknown activation `{name}` (known: {}, quad(fn, deg))", known.join(", ")),
                ))
            }

            /// Examples of every activation in the table, with non-default parameters (for the generic tests).
            pub fn catalogue() -> Vec<Activation> {
                let mut all = Vec::new();
                $( all.extend([$($ex),*]); )*
                all
            }

            /// The canonical name (of the inner activation for `quad(...)`).
            pub fn name(&self) -> &'static str {
                match self {
                    $( Activation::$var { .. } => $name, )*
                    Activation::Quad { inner, .. } => inner.name(),
                }
            }

            /// The parameter values in table order.
            #[allow(unused_variables)]
            pub fn param_values(&self) -> Vec<f64> {
                match self {
                    $( Activation::$var $({ $($p),* })? => vec![$($(*$p),*)?], )*
                    Activation::Quad { .. } => Vec::new(),
                }
            }
        }
    };
}

activations! {
    /// max(x, 0).
    Relu "relu" {
        phi(x) = x.max(0.0),
        dphi(x) = step(x, 0.0, 1.0),
        d2phi(x) = 0.0,
        closed(s11, s12, s22) = relu_dual(s11, s12, s22),
        piecewise_linear: true,
        examples: [Activation::Relu],
    }
    /// x for x > 0, a x otherwise.
    LeakyRelu { a = 0.01 } "leaky_relu" | "leakyrelu" {
        phi(x) = step(x, a, 1.0) * x,
        dphi(x) = step(x, a, 1.0),
        d2phi(x) = 0.0,
        closed(s11, s12, s22) = abrelu_dual(a, 1.0, s11, s12, s22),
        piecewise_linear: true,
        examples: [Activation::LeakyRelu { a: 0.1 }],
    }
    /// a min(x, 0) + b max(x, 0) (neural-tangents `ABRelu`).
    AbRelu { a = 0.0, b = 1.0 } "abrelu" | "ab_relu" {
        phi(x) = step(x, a, b) * x,
        dphi(x) = step(x, a, b),
        d2phi(x) = 0.0,
        closed(s11, s12, s22) = abrelu_dual(a, b, s11, s12, s22),
        piecewise_linear: true,
        examples: [Activation::AbRelu { a: -0.3, b: 0.8 }],
    }
    /// |x|.
    Abs "abs" {
        phi(x) = x.abs(),
        dphi(x) = signum0(x),
        d2phi(x) = 0.0,
        closed(s11, s12, s22) = abrelu_dual(-1.0, 1.0, s11, s12, s22),
        piecewise_linear: true,
        examples: [Activation::Abs],
    }
    /// a erf(b x) + c.
    Erf { a = 1.0, b = 1.0, c = 0.0 } "erf" {
        phi(x) = a * libm::erf(b * x) + c,
        dphi(x) = a * b * 2.0 / PI.sqrt() * (-(b * x) * (b * x)).exp(),
        d2phi(x) = -2.0 * b * b * x * (a * b * 2.0 / PI.sqrt() * (-(b * x) * (b * x)).exp()),
        closed(s11, s12, s22) = erf_dual(a, b, c, s11, s12, s22),
        examples: [Activation::Erf { a: 1.3, b: 0.7, c: 0.2 }],
    }
    /// 0.5 erf(x / 2.4020563531719796) + 0.5 (neural-tangents `Sigmoid_like`).
    SigmoidLike "sigmoid_like" {
        phi(x) = 0.5 * libm::erf(x / SIGMOID_LIKE_SCALE) + 0.5,
        dphi(x) = Activation::Erf { a: 0.5, b: 1.0 / SIGMOID_LIKE_SCALE, c: 0.5 }.derivative(x),
        d2phi(x) = Activation::Erf { a: 0.5, b: 1.0 / SIGMOID_LIKE_SCALE, c: 0.5 }.second_derivative(x),
        closed(s11, s12, s22) = erf_dual(0.5, 1.0 / SIGMOID_LIKE_SCALE, 0.5, s11, s12, s22),
        examples: [Activation::SigmoidLike],
    }
    /// x Phi(x), the exact (not tanh-approximated) GELU.
    Gelu "gelu" {
        phi(x) = x * std_normal_cdf(x),
        dphi(x) = std_normal_cdf(x) + x * std_normal_pdf(x),
        d2phi(x) = std_normal_pdf(x) * (2.0 - x * x),
        closed(s11, s12, s22) = gelu_dual(s11, s12, s22),
        examples: [Activation::Gelu],
    }
    /// a sin(b x + c).
    Sin { a = 1.0, b = 1.0, c = 0.0 } "sin" {
        phi(x) = a * (b * x + c).sin(),
        dphi(x) = a * b * (b * x + c).cos(),
        d2phi(x) = -a * b * b * (b * x + c).sin(),
        closed(s11, s12, s22) = sin_dual(a, b, c, s11, s12, s22),
        examples: [Activation::Sin { a: 1.1, b: 0.9, c: 0.3 }],
    }
    /// a cos(b x + c).
    Cos { a = 1.0, b = 1.0, c = 0.0 } "cos" {
        phi(x) = a * (b * x + c).cos(),
        dphi(x) = -a * b * (b * x + c).sin(),
        d2phi(x) = -a * b * b * (b * x + c).cos(),
        closed(s11, s12, s22) = sin_dual(a, b, c + FRAC_PI_2, s11, s12, s22),
        examples: [Activation::Cos { a: 0.8, b: 1.2, c: -0.4 }],
    }
    /// x.
    Identity "identity" | "linear" {
        phi(x) = x,
        dphi(x) = 1.0,
        d2phi(x) = 0.0,
        closed(s11, s12, s22) = (s12, 1.0),
        piecewise_linear: true,
        examples: [Activation::Identity],
    }
    /// sqrt(2) sin(sqrt(2 gamma) x + pi/4), whose NNGP is exp(-gamma |x - x'|^2)-like (neural-tangents `Rbf`).
    Rbf { gamma = 1.0 } "rbf" {
        valid: gamma > 0.0 => "rbf needs gamma > 0",
        phi(x) = 2f64.sqrt() * ((2.0 * gamma).sqrt() * x + PI / 4.0).sin(),
        dphi(x) = 2f64.sqrt() * (2.0 * gamma).sqrt() * ((2.0 * gamma).sqrt() * x + PI / 4.0).cos(),
        d2phi(x) = -(2f64.sqrt()) * 2.0 * gamma * ((2.0 * gamma).sqrt() * x + PI / 4.0).sin(),
        closed(s11, s12, s22) = {
            let t = (-gamma * (s11 + s22 - 2.0 * s12)).exp();
            (t, 2.0 * gamma * t)
        },
        examples: [Activation::Rbf { gamma: 0.6 }],
    }
    /// a exp(b x).
    Exp { a = 1.0, b = 1.0 } "exp" {
        phi(x) = a * (b * x).exp(),
        dphi(x) = a * b * (b * x).exp(),
        d2phi(x) = a * b * b * (b * x).exp(),
        closed(s11, s12, s22) = {
            let t = a * a * (0.5 * b * b * (s11 + s22 + 2.0 * s12)).exp();
            (t, b * b * t)
        },
        examples: [Activation::Exp { a: 0.7, b: 0.5 }],
    }
    /// x^k, k an integer in 0..=5 (Mehler's Hermite expansion for the dual).
    Monomial { k = 1.0 } "monomial" {
        valid: k.fract() == 0.0 && (0.0..=5.0).contains(&k) => "monomial degree k must be an integer in 0..=5",
        phi(x) = x.powi(k as i32),
        dphi(x) = if k == 0.0 { 0.0 } else { k * x.powi(k as i32 - 1) },
        d2phi(x) = if k < 2.0 { 0.0 } else { k * (k - 1.0) * x.powi(k as i32 - 2) },
        closed(s11, s12, s22) = {
            let k = k as u32;
            let t = monomial_moment(k, s11, s12, s22);
            let td = if k == 0 { 0.0 } else { (k as f64).powi(2) * monomial_moment(k - 1, s11, s12, s22) };
            (t, td)
        },
        examples: [
            Activation::Monomial { k: 0.0 },
            Activation::Monomial { k: 1.0 },
            Activation::Monomial { k: 2.0 },
            Activation::Monomial { k: 3.0 },
            Activation::Monomial { k: 4.0 },
            Activation::Monomial { k: 5.0 },
        ],
    }
    /// sign(x) (derivative 0 almost everywhere, so its NTK contribution is 0).
    Sign "sign" {
        phi(x) = signum0(x),
        dphi(x) = 0.0,
        d2phi(x) = 0.0,
        closed(s11, s12, s22) = sign_dual(s11, s12, s22),
        piecewise_linear: true,
        examples: [Activation::Sign],
    }
    /// tanh(x) (strip quadrature).
    Tanh "tanh" {
        phi(x) = x.tanh(),
        dphi(x) = 1.0 - x.tanh().powi(2),
        d2phi(x) = {
            let t = x.tanh();
            -2.0 * t * (1.0 - t * t)
        },
        rule: QuadratureRule::Strip(FRAC_PI_2),
        examples: [Activation::Tanh],
    }
    /// ln(1 + e^x) (strip quadrature).
    Softplus "softplus" {
        phi(x) = if x > 30.0 { x + (-x).exp() } else { x.exp().ln_1p() },
        dphi(x) = sigmoid(x),
        d2phi(x) = sigmoid(x) * (1.0 - sigmoid(x)),
        rule: QuadratureRule::Strip(PI),
        examples: [Activation::Softplus],
    }
    /// x sigmoid(x), also called swish (strip quadrature).
    Silu "silu" | "swish" {
        phi(x) = x * sigmoid(x),
        dphi(x) = {
            let s = sigmoid(x);
            s + x * s * (1.0 - s)
        },
        d2phi(x) = {
            let s = sigmoid(x);
            s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
        },
        rule: QuadratureRule::Strip(PI),
        examples: [Activation::Silu],
    }
    /// x for x > 0, alpha (e^x - 1) otherwise (semi-analytic quadrature).
    Elu { alpha = 1.0 } "elu" {
        phi(x) = if x > 0.0 { x } else { alpha * x.exp_m1() },
        dphi(x) = if x > 0.0 { 1.0 } else { alpha * x.exp() },
        d2phi(x) = if x > 0.0 { 0.0 } else { alpha * x.exp() },
        rule: QuadratureRule::Elu(alpha),
        examples: [Activation::Elu { alpha: 0.8 }],
    }
}

impl Activation {
    /// A ready-to-evaluate dual (T, Tdot): the closed form; for `quad(fn, deg)`, the Gauss–Hermite rule of
    /// that degree; otherwise the table's [`QuadratureRule`].
    pub fn dual(&self) -> Dual {
        if let Activation::Quad { inner, deg } = self {
            return Dual::Quad { act: (**inner).clone(), rule: GaussHermite::new(*deg) };
        }
        if self.has_closed_form() {
            return Dual::Closed(self.clone());
        }
        match self.quadrature_rule() {
            QuadratureRule::Hermite => Dual::Quad { act: self.clone(), rule: GaussHermite::new(DEFAULT_QUAD_DEG) },
            QuadratureRule::Strip(width) => Dual::Strip { act: self.clone(), rule: StripTrapezoid::new(width) },
            QuadratureRule::Elu(alpha) => Dual::Elu(EluDual::new(alpha)),
        }
    }

    /// Parse one activation, e.g. `relu`, `leaky_relu(0.1)`, `erf(a=1,b=2,c=0)`, `quad(tanh, 64)`.
    pub fn parse(text: &str) -> Result<Activation> {
        let call = Call::parse(text)?;
        Self::from_call(&call)
    }

    /// `quad(fn, deg)`: any activation with its dual by Gauss–Hermite of degree `deg` (default 48).
    fn quad_from_call(call: &Call) -> Result<Activation> {
        let slots = call.bind(&["fn", "deg"])?;
        let inner =
            slots[0].as_ref().ok_or_else(|| Error::parse(&call.text, "quad needs a function, e.g. quad(tanh, 64)"))?;
        let inner = Activation::parse(inner)?;
        if matches!(inner, Activation::Quad { .. }) {
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
        Ok(Activation::Quad { inner: Box::new(inner), deg })
    }
}

impl fmt::Display for Activation {
    /// The canonical textual form, parseable by [`Activation::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Activation::Quad { inner, deg } = self {
            return write!(f, "quad({inner},{deg})");
        }
        f.write_str(self.name())?;
        let values = self.param_values();
        if !values.is_empty() {
            let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            write!(f, "({})", v.join(","))?;
        }
        Ok(())
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
    fn registry_covers_parser_catalogue_and_display() {
        // Every table entry parses under its name and aliases with its defaults, has an example in the
        // catalogue, and shows up in the unknown-name error; every catalogue member belongs to one entry.
        let err = Activation::parse("nope").unwrap_err().to_string();
        for e in REGISTRY {
            let by_name = Activation::parse(e.name).unwrap();
            assert_eq!(by_name.name(), e.name);
            let defaults: Vec<f64> = e.params.iter().map(|p| p.1).collect();
            assert_eq!(by_name.param_values(), defaults, "{}", e.name);
            for alias in e.aliases {
                assert_eq!(Activation::parse(alias).unwrap(), by_name, "{alias}");
            }
            assert!(Activation::catalogue().iter().any(|a| a.name() == e.name), "{} has no example", e.name);
            assert!(err.contains(&e.signature()), "{err} lacks {}", e.signature());
            assert!(!e.summary.trim().is_empty(), "{} has no summary", e.name);
        }
        for a in Activation::catalogue() {
            assert!(REGISTRY.iter().any(|e| e.name == a.name()), "{a}");
            assert_eq!(a.param_values().len(), REGISTRY.iter().find(|e| e.name == a.name()).unwrap().params.len());
        }
        // Validation from the table, by name and by position.
        assert!(Activation::parse("rbf(gamma=0)").unwrap_err().to_string().contains("gamma > 0"));
        assert!(Activation::parse("monomial(2.5)").is_err());
        assert_eq!(Activation::parse("erf(c=0.5, a=2)").unwrap(), Activation::Erf { a: 2.0, b: 1.0, c: 0.5 });
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
