//! The training step allocates nothing large once its workspace is warm: a counting global allocator records
//! every allocation of 64 KiB or more (the N x width matrices of the passes; small bookkeeping vectors stay
//! below it), and repeated loss-gradient evaluations (and VJPs of any cotangent) with one `Workspace` must make
//! none.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ntklab::kernel::{Architecture, Parameterization};
use ntklab::net::{Network, Workspace};
use ntklab::train::loss::Loss;

struct Counting;
static BIG: AtomicUsize = AtomicUsize::new(0);
static LAST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= 1 << 16 {
            BIG.fetch_add(1, Ordering::Relaxed);
            LAST.store(layout.size(), Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= 1 << 16 {
            BIG.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn gradient_steps_allocate_nothing_large_after_the_first() {
    for spec in
        ["dense(256),relu,dense(256),relu,dense(1)", "dense(128,b_std=0.1),residual(tanh,dense(128)),relu,dense(2)"]
    {
        let arch = Architecture::parse(spec, Parameterization::Ntk).unwrap();
        let mut net = Network::init(&arch, 32, 1.0, 1).unwrap();
        let x = ntklab::data::synthetic::gaussian(200, 32, 2);
        let y = ntklab::data::synthetic::gaussian(200, net.output_dim(), 3);
        let mut ws = Workspace::default();
        let mut grad = vec![0.0; net.num_params()];
        net.loss_gradient_into(x.as_ref(), y.as_ref(), Loss::Mse, &mut grad, &mut ws).unwrap();
        let before = BIG.load(Ordering::Relaxed);
        let mut losses = Vec::new();
        for _ in 0..3 {
            let (l, _) = net.loss_gradient_into(x.as_ref(), y.as_ref(), Loss::Mse, &mut grad, &mut ws).unwrap();
            losses.push(l);
            for (w, g) in net.params_mut().iter_mut().zip(&grad) {
                *w -= 0.1 * g;
            }
        }
        assert_eq!(
            BIG.load(Ordering::Relaxed) - before,
            0,
            "{spec}: large allocations inside the step loop (last {} bytes)",
            LAST.load(Ordering::Relaxed)
        );
        assert!(losses[2] < losses[0], "{spec}: GD steps must decrease the loss: {losses:?}");

        // The same for an arbitrary cotangent (here the l_4 loss's (f - y)^3 / N): `vjp_into` equals `vjp` at the
        // outputs it returns and allocates nothing large once warm.
        let l4 = |f: faer::MatRef<'_, f64>| {
            faer::Mat::from_fn(f.nrows(), f.ncols(), |i, j| (f[(i, j)] - y[(i, j)]).powi(3) / 200.0)
        };
        let f = net.vjp_into(x.as_ref(), l4, &mut grad, &mut ws).unwrap();
        let reference = net.vjp(x.as_ref(), l4(f.as_ref()).as_ref()).unwrap();
        assert_eq!(grad, reference, "{spec}: vjp_into differs from vjp");
        assert_eq!(f, net.forward(x.as_ref()).unwrap());
        let before = BIG.load(Ordering::Relaxed);
        for _ in 0..3 {
            net.vjp_into(x.as_ref(), l4, &mut grad, &mut ws).unwrap();
        }
        assert_eq!(BIG.load(Ordering::Relaxed) - before, 0, "{spec}: large allocations in vjp_into");
        assert!(net.vjp_into(x.as_ref(), |_| faer::Mat::zeros(3, 1), &mut grad, &mut ws).is_err());
    }
}
