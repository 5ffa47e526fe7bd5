#![no_main]
//! libFuzzer entry for the `hello` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("hello").expect("known target").run)(data));
