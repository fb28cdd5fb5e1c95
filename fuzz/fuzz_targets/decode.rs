//! Fuzz target: see `rakis_fuzz::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rakis_fuzz::decode::check(data));
