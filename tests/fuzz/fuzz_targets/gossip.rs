#![no_main]
//! libFuzzer entry for the `gossip` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("gossip").expect("known target").run)(data));
