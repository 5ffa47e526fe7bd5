#![no_main]
//! libFuzzer entry for the `token` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("token").expect("known target").run)(data));
