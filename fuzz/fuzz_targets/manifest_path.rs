#![no_main]
//! Manifest paths: `check_path` never panics, and `path_order` is a consistent order.
use libfuzzer_sys::fuzz_target;
use sealrun_verifier::manifest::{check_path, path_order};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = check_path(s);
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid -= 1;
    }
    let (a, b) = s.split_at(mid);
    assert_eq!(path_order(a, b), path_order(b, a).reverse());
    assert_eq!(path_order(a, a), std::cmp::Ordering::Equal);
});
