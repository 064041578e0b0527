//! `strongroom-bench passwords`: the offline breached-password corpus — import speed of a
//! generated list in Have I Been Pwned's format (sorted `HEX40:COUNT` lines, CRLF), and lookup
//! latency, direct and through the port (on the blocking pool), half of the keys present.

use std::io::Write;
use std::time::Instant;

use hdrhistogram::Histogram;
use sha1::{Digest, Sha1};
use strongroom_domain::ports::BreachedPasswords;
use strongroom_store::pwned::{self, ImportOptions, PwnedFile};

fn sha1(text: &str) -> [u8; 20] {
    Sha1::digest(text.as_bytes()).into()
}

fn line(histogram: &Histogram<u64>, what: &str, count: usize) {
    println!(
        "| {what} | {count} | {:.1} µs | {:.1} µs | {:.1} µs |",
        histogram.mean() / 1000.0,
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0
    );
}

/// Builds a corpus of `hashes` SHA-1s and measures it.
pub async fn run(hashes: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let list = dir.path().join("pwned.txt");
    let mut lines: Vec<String> =
        (0..hashes).map(|i| sha1(&format!("pw-{i}"))).map(|h| hex(&h) + &format!(":{}\r\n", h[19] % 100 + 1)).collect();
    lines.sort_unstable();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&list)?);
    for text in &lines {
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    drop(lines);
    let input_bytes = std::fs::metadata(&list)?.len();
    let corpus = dir.path().join("pwned-passwords.bin");
    let started = Instant::now();
    let report = tokio::task::spawn_blocking({
        let (list, corpus) = (list.clone(), corpus.clone());
        move || pwned::import(&list, &corpus, ImportOptions::default(), &mut |_| {})
    })
    .await??;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "import: {} lines ({:.1} MB) in {seconds:.2} s: {:.0} lines/s, {:.0} MB/s; corpus {} bytes",
        report.lines,
        input_bytes as f64 / 1e6,
        report.lines as f64 / seconds,
        input_bytes as f64 / 1e6 / seconds,
        report.bytes
    );

    let file = PwnedFile::open(&corpus)?;
    let keys: Vec<(bool, [u8; 20])> = (0..200_000u64)
        .map(|i| {
            if i % 2 == 0 {
                (true, sha1(&format!("pw-{}", i * 7919 % hashes)))
            } else {
                (false, sha1(&format!("absent-{i}")))
            }
        })
        .collect();
    println!();
    println!("| lookup ({} hashes, warm page cache) | lookups | mean | p50 | p99 |", report.written);
    println!("|---|---|---|---|---|");
    let mut direct = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for _ in 0..2 {
        direct.reset();
        for (present, key) in &keys {
            let started = Instant::now();
            let found = file.contains(key)?;
            direct.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1))?;
            anyhow::ensure!(found == *present, "a lookup answered wrong");
        }
    }
    line(&direct, "positioned reads, on the caller's thread", keys.len());
    let mut through_port = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for (present, key) in keys.iter().take(50_000) {
        let started = Instant::now();
        let found = BreachedPasswords::contains(&file, key).await?;
        through_port.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1))?;
        anyhow::ensure!(found == *present, "a lookup answered wrong");
    }
    line(&through_port, "through the port (spawn_blocking)", 50_000);
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
