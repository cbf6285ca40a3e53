use ntklab::kernel::{Architecture, Parameterization, Shape};
use ntklab::net::Mlp;
use std::time::Instant;
fn main() {
    let n = 64;
    let a = Architecture::parse("conv(16,3x3,padding=same,w_std=1.5,b_std=0.1),relu,conv(16,3x3,padding=same,w_std=1.5,b_std=0.1),relu,global_avg_pool,dense(1,w_std=1.5,b_std=0.1)", Parameterization::Ntk).unwrap();
    let s = Shape::image(&[16, 16], 3);
    let net = Mlp::init_for(&a, &s, 1.0, 0).unwrap();
    let x = ntklab::data::synthetic::gaussian(n, s.size(), 1);
    for i in 0..6 {
        if i == 5 {
            std::env::set_var("PROF", "1");
        }
        let t = Instant::now();
        let _tape = net.tape(x.as_ref()).unwrap();
        if i == 5 {
            eprintln!("tape {:.5}", t.elapsed().as_secs_f64());
        }
    }
}
