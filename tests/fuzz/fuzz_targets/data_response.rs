#![no_main]
//! libFuzzer entry for the `data_response` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("data_response").expect("known target").run)(data));
