//! Every closed-form dual against 60-digit references (tools/make_dual_references.py) from q = 1e-8 to q = 1e12,
//! at correlations from -1 to 1 - 1e-12 and 1, equal and unequal variances.
//!
//! The bound on |computed - reference| is 1e-10 of the entry's Cauchy–Schwarz scale
//! sqrt(T(s11,s11,s11) T(s22,s22,s22)) (the natural size of a kernel entry) plus the entry's conditioning: how
//! far the exact value moves when one input moves by 4 ulps (the fixture's "spread"; near rho = +-1 asin and acos
//! turn an ulp of input into ~1e-8 of output, and no f64 algorithm can do better since its inputs are only known
//! to rounding). Unstable formulas miss this by orders of magnitude: the cancelling 2x2 determinant in the erf NTK
//! erred by 1e-5 of scale at q = 1e12 and the unsimplified GELU NNGP by 5e-9 at q = 1e-8.

use std::path::Path;

use ntklab::data::read_npy;
use ntklab::kernel::Activation;

#[test]
fn closed_form_duals_match_high_precision_references_up_to_q_1e12() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let names = std::fs::read_to_string(dir.join("dual_references.txt")).unwrap();
    let acts: Vec<Activation> = names.lines().map(|l| Activation::parse(l).unwrap()).collect();
    // Every closed-form activation of the table has references.
    for a in Activation::catalogue().into_iter().filter(Activation::has_closed_form) {
        assert!(acts.contains(&a), "no high-precision references for {a}");
    }
    let table = read_npy(&dir.join("dual_references.npy")).unwrap();
    assert_eq!(table.shape[1], 10);
    let mut worst = vec![(0.0f64, 0.0f64); acts.len()];
    let mut failures = Vec::new();
    for row in table.data.chunks(10) {
        let i = row[0] as usize;
        let (s11, s12, s22) = (row[1], row[2], row[3]);
        let (t_ref, td_ref, t_scale, td_scale) = (row[4], row[5], row[6], row[7]);
        let (t_spread, td_spread) = (row[8], row[9]);
        let (t, td) = acts[i].dual().eval(s11, s12, s22);
        let (wt, wtd) = &mut worst[i];
        for (what, got, want, scale, spread, w) in
            [("T", t, t_ref, t_scale, t_spread, wt), ("Tdot", td, td_ref, td_scale, td_spread, wtd)]
        {
            if want.is_infinite() {
                // The true value is beyond f64 (exp at large variance): it must come out as that infinity,
                // which the commands then refuse as a non-finite result.
                if got != want {
                    failures.push(format!("{} {what} at ({s11:e}, {s12:e}, {s22:e}): {got} vs {want}", acts[i]));
                }
                continue;
            }
            // Errors beyond the conditioning, in units of the scale (of |want| where the scale is 0).
            let unit = if scale.is_finite() && scale > 0.0 { scale } else { want.abs().max(f64::MIN_POSITIVE) };
            let err = ((got - want).abs() - spread).max(0.0) / unit;
            *w = w.max(err);
            if err.is_nan() || err > 1e-10 {
                failures.push(format!(
                    "{} {what} at ({s11:e}, {s12:e}, {s22:e}): {got:e} vs {want:e} (error {err:.1e} of scale {scale:e})",
                    acts[i]
                ));
            }
        }
    }
    for (a, (wt, wtd)) in acts.iter().zip(&worst) {
        eprintln!("{a:>20}: worst T error {wt:.1e}, Tdot {wtd:.1e} (relative to the Cauchy-Schwarz scale)");
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
