#![no_main]
//! libFuzzer entry for the `ts_demux` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("ts_demux").expect("known target").run)(data));
