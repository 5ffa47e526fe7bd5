#![no_main]
//! libFuzzer entry for the `ingest_path` target (see `shoal_tests::fuzz`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (shoal_tests::fuzz::target("ingest_path").expect("known target").run)(data));
