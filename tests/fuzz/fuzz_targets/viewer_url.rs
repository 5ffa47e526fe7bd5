#![no_main]
//! libFuzzer entry for the `viewer_url` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("viewer_url").expect("known target").run)(data));
