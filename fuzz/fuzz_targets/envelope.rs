//! Fuzz target: see `rakis_fuzz::envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rakis_fuzz::envelope::check(data));
