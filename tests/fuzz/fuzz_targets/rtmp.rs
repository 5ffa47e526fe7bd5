#![no_main]
//! libFuzzer entry for the `rtmp` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("rtmp").expect("known target").run)(data));
