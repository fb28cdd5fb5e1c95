//! Fuzz target: see `rakis_fuzz::coordinator`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rakis_fuzz::coordinator::check(data));
