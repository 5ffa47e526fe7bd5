//! The fuzz targets (`shoal_tests::fuzz`) on stable: a seeded mutator (bit flips,
//! interesting values, splices, a dictionary of the formats' tokens) over each target's
//! seeds and kept corpus (`tests/fuzz/corpus/<target>/`). Not coverage-guided: that is
//! `cargo fuzz` on nightly (`scripts/fuzz.sh`); this keeps every property checked in
//! every test run.
//!
//! `SHOAL_FUZZ_EXECS` (default 5,000 per target), `SHOAL_FUZZ_TARGET` (one target),
//! `SHOAL_FUZZ_SEED` (default: fixed, so a run is reproducible). A failing input is
//! written to `target/fuzz-failures/`.

use shoal_tests::fuzz::{TARGETS, Target};
use std::path::{Path, PathBuf};

/// Longest input made.
const MAX_INPUT: usize = 64 * 1024;

/// Tokens of the formats the targets parse: mutations that insert them reach past the
/// first checks of a text parser.
const DICTIONARY: &[&[u8]] = &[
    b"#EXTM3U\n",
    b"#EXTINF:",
    b"#EXT-X-MEDIA-SEQUENCE:",
    b"#EXT-X-MAP:URI=\"",
    b"#EXT-X-ENDLIST",
    b"#EXT-X-DISCONTINUITY",
    b"#EXT-X-STREAM-INF",
    b"18446744073709551615",
    b"4294967296",
    b"-0",
    b"1e308",
    b"NaN",
    b"bytes=",
    b"sid=",
    b"token=",
    b"redirected",
    b"shoal_token=",
    b"Bearer ",
    b"index.m3u8",
    b".ts",
    b".m4s",
    b"init-",
    b"%0d%0a",
    b"..",
    b"/",
    b"&",
    b"=",
    b",",
    b";",
    b"\"",
    b"\n",
    b".",
    // RTMP and AMF0: command names, the object end marker, an extended timestamp's
    // marker, a type 3 chunk header.
    b"\x02\x00\x07connect",
    b"\x02\x00\x07publish",
    b"createStream",
    b"FCUnpublish",
    b"@setDataFrame",
    b"onMetaData",
    &[0, 0, 9],
    &[0xff, 0xff, 0xff],
    &[0xc3],
];

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four stacked mutations of `input`.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b' '][rng.below(8)];
            }
            3 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            5 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(32)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            7 if v.len() >= 8 => {
                let i = rng.below(v.len() - 7);
                let value: u64 =
                    [0, 1, u64::MAX, u64::MAX / 2, u32::MAX as u64, 1 << 32, 255][rng.below(7)];
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                v[i..i + 8].copy_from_slice(&bytes);
            }
            _ => {
                let word = DICTIONARY[rng.below(DICTIONARY.len())];
                v.splice(at..at, word.iter().copied());
            }
        }
    }
    v.truncate(MAX_INPUT);
    v
}

/// The target's seeds and its kept corpus.
fn corpus(target: &Target) -> Vec<Vec<u8>> {
    let mut all = (target.seeds)();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target.name);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(bytes) = std::fs::read(&f) {
                all.push(bytes);
            }
        }
    }
    all
}

/// Runs `target` on its corpus and `execs` mutants; the failing input, if any.
fn run(target: &Target, execs: u64, seed: u64) -> Result<(), (Vec<u8>, String)> {
    let corpus = corpus(target);
    let mut rng = Rng(seed ^ blake3::hash(target.name.as_bytes()).as_bytes()[0] as u64 | 1);
    let check = |input: &[u8]| {
        std::panic::catch_unwind(|| (target.run)(input)).map_err(|e| {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (input.to_vec(), why)
        })
    };
    for input in &corpus {
        check(input)?;
    }
    for _ in 0..execs {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus);
        check(&input)?;
    }
    Ok(())
}

#[test]
fn every_parser_of_network_input_keeps_its_properties() {
    let execs = std::env::var("SHOAL_FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let seed = std::env::var("SHOAL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x05EE_D0F5_A0A1);
    let only = std::env::var("SHOAL_FUZZ_TARGET").ok();
    let mut failures = vec![];
    for target in TARGETS {
        if only.as_deref().is_some_and(|o| o != target.name) {
            continue;
        }
        let started = std::time::Instant::now();
        match run(target, execs, seed) {
            Ok(()) => println!(
                "fuzz {}: {} seeds and kept inputs, {execs} mutants, no failure ({:.1} s)",
                target.name,
                corpus(target).len(),
                started.elapsed().as_secs_f64()
            ),
            Err((input, why)) => {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!(
                    "{}-{}",
                    target.name,
                    &blake3::hash(&input).to_hex()[..16]
                ));
                std::fs::write(&file, &input).unwrap();
                failures.push(format!(
                    "{}: {why}; input ({} bytes) in {}",
                    target.name,
                    input.len(),
                    file.display()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz failures:\n{}",
        failures.join("\n")
    );
}

/// Writes every target's seeds into its corpus directory (`scripts/fuzz.sh` runs this
/// before libFuzzer, which starts from the corpus).
#[test]
#[ignore = "run by scripts/fuzz.sh"]
fn write_seeds() {
    for target in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target.name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in (target.seeds)().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
