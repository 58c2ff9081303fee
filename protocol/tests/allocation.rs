//! Decoders never allocate for a declared length they have not checked against their limit:
//! a counting allocator records the largest single allocation while hostile inputs are decoded.
//! One test in this binary, so nothing else allocates meanwhile.

use passenger_protocol::{channel, scgi, session};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// The largest allocation `f` makes.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    f();
    LARGEST.load(Ordering::Relaxed)
}

#[test]
fn huge_declared_lengths_allocate_nothing_for_them() {
    const LIMIT: usize = 1 << 20;
    const HUGE_SCALAR: &[u8] = b"\xff\xff\xff\xfftiny";
    let cases: [(&str, fn()); 5] = [
        ("scgi::decode", || {
            let _ = scgi::decode(b"4294967295:tiny", LIMIT);
        }),
        ("channel::decode_scalar", || {
            let _ = channel::decode_scalar(HUGE_SCALAR, LIMIT);
        }),
        ("channel::read_scalar", || {
            let _ = channel::read_scalar(&mut &HUGE_SCALAR[..], LIMIT);
        }),
        ("channel::read_scalar within the limit but short", || {
            let _ = channel::read_scalar(&mut &b"\x00\x0f\xff\xfftiny"[..], LIMIT);
        }),
        ("session::decode_header", || {
            let _ = session::decode_header(HUGE_SCALAR, LIMIT);
        }),
    ];
    // The instrument itself works.
    let probe =
        largest_allocation(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(1 << 16))));
    assert!(probe >= 1 << 16, "the counting allocator saw {probe} bytes");
    for (what, f) in cases {
        let largest = largest_allocation(f);
        // The error messages themselves allocate a little; nothing near the declared sizes.
        assert!(largest < 4096, "{what} allocated {largest} bytes");
    }
}
