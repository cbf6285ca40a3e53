use ntklab::kernel::{Architecture, Parameterization, Shape};
use ntklab::net::{Mlp, NtkOutputs};
use std::time::Instant;
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(64);
    let a = Architecture::parse("conv(16,3x3,padding=same,w_std=1.5,b_std=0.1),relu,conv(16,3x3,padding=same,w_std=1.5,b_std=0.1),relu,global_avg_pool,dense(1,w_std=1.5,b_std=0.1)", Parameterization::Ntk).unwrap();
    let s = Shape::image(&[16, 16], 3);
    let net = Mlp::init_for(&a, &s, 1.0, 0).unwrap();
    let x = ntklab::data::synthetic::gaussian(n, s.size(), 1);
    let mut best = [f64::MAX; 3];
    for _ in 0..30 {
        let t = Instant::now();
        let tape = net.tape(x.as_ref()).unwrap();
        let t1 = t.elapsed().as_secs_f64();
        let u = faer::Mat::<f64>::from_fn(n, 1, |_, _| 1.0);
        let t = Instant::now();
        let _g = net.vjp_at(&tape, u.as_ref()).unwrap();
        let t2 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _k = net.empirical_ntk_at(&tape, None, NtkOutputs::Trace);
        let t3 = t.elapsed().as_secs_f64();
        best = [best[0].min(t1), best[1].min(t2), best[2].min(t3)];
    }
    println!("min: tape {:.4} vjp {:.4} entk(at) {:.4}", best[0], best[1], best[2]);
}
