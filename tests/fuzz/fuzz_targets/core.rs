#![no_main]
//! libFuzzer entry for the `core` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("core").expect("known target").run)(data));
