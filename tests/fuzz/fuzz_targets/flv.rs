#![no_main]
//! libFuzzer entry for the `flv` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("flv").expect("known target").run)(data));
