#![no_main]
//! libFuzzer entry for the `data_request` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("data_request").expect("known target").run)(data));
