//! The offline breached-password corpus: Have I Been Pwned's "Pwned Passwords" SHA-1 list,
//! imported by `strongroom passwords import` into a compact sorted file ([`import`]) and looked up
//! by binary search with positioned reads ([`PwnedFile`]): nothing is mapped or loaded into
//! memory, so a corpus of a billion hashes costs a file descriptor.
//!
//! The file (integers little-endian): the magic `SRPWNED1` (8 bytes), the width `w` of the kept
//! hash prefix (1 byte, 6 to 20; default 8), 7 zero bytes, the record count `n` (u64), then `n`
//! records of the first `w` bytes of a SHA-1, strictly ascending; its length is exactly
//! `24 + n·w`. Truncation makes false matches possible: a password in no breach matches one of
//! `n` random `w`-byte prefixes with probability about `n / 2^(8w)`, with `w = 8` and the full
//! corpus (about 10^9 hashes) 5·10^-11 per lookup. Never a false "not found".
//!
//! Must never: load the corpus into memory; leave a partly written file under the final name (it
//! is written to a temporary file, synced and renamed); accept input out of hash order (the
//! lookup would miss silently); quote an input line in an error.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use strongroom_domain::ports::{BreachSourceError, BreachedPasswords};

const MAGIC: &[u8; 8] = b"SRPWNED1";
const HEADER: u64 = 24;
/// The narrowest prefix accepted: 48 bits.
pub const MIN_WIDTH: usize = 6;
/// The default prefix: 64 bits.
pub const DEFAULT_WIDTH: usize = 8;
/// Records the search reads at once when the range is this small (2 KiB at the default width).
const WINDOW: u64 = 256;

/// Why a corpus cannot be read or imported.
#[derive(Debug, thiserror::Error)]
pub enum PwnedError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The corpus file is not one this module wrote, or was cut short.
    #[error("{} is not a usable breached-password file: {why}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A line of the input is not `HEX:COUNT`, or out of order.
    #[error("{} line {line}: {why}", .path.display())]
    Input {
        /// The input file.
        path: PathBuf,
        /// Its line number, from 1.
        line: u64,
        /// What is wrong (never the line itself).
        why: String,
    },
    /// The import options or the input as a whole cannot make a corpus.
    #[error("{0}")]
    Invalid(String),
}

impl PwnedError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io { path: path.to_owned(), source }
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                let rest = buf;
                buf = &mut rest[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// An opened corpus file. Cheap to clone (the file is shared).
#[derive(Debug, Clone)]
pub struct PwnedFile {
    file: Arc<File>,
    width: usize,
    count: u64,
}

impl PwnedFile {
    /// Opens and checks a corpus: magic, width, and a length that matches the record count.
    pub fn open(path: &Path) -> Result<Self, PwnedError> {
        let file = File::open(path).map_err(PwnedError::io(path))?;
        let len = file.metadata().map_err(PwnedError::io(path))?.len();
        let corrupt = |why: String| PwnedError::Corrupt { path: path.to_owned(), why };
        if len < HEADER {
            return Err(corrupt(format!("{len} bytes, shorter than the {HEADER}-byte header")));
        }
        let mut header = [0u8; HEADER as usize];
        read_at(&file, &mut header, 0).map_err(PwnedError::io(path))?;
        let (magic, rest) = header.split_at(8);
        if magic != MAGIC {
            return Err(corrupt("it does not start with SRPWNED1 (make it with `strongroom passwords import`)".into()));
        }
        let (width, rest) = rest.split_at(1);
        let (flags, count) = rest.split_at(7);
        let width = usize::from(width.first().copied().unwrap_or_default());
        if !(MIN_WIDTH..=20).contains(&width) || flags.iter().any(|b| *b != 0) {
            return Err(corrupt(format!("unknown layout (prefix width {width})")));
        }
        let count = u64::from_le_bytes(count.try_into().map_err(|_| corrupt("short header".into()))?);
        let expected = count.checked_mul(width as u64).and_then(|records| records.checked_add(HEADER));
        if expected != Some(len) {
            return Err(corrupt(format!(
                "{len} bytes, but the header promises {count} records of {width} bytes: cut short or overwritten"
            )));
        }
        Ok(Self { file: Arc::new(file), width, count })
    }

    /// The number of hashes.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the corpus holds no hash.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of each hash kept.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The chance that a hash in no breach matches a record by its prefix alone.
    pub fn false_positive_rate(&self) -> f64 {
        false_positive_rate(self.count, self.width)
    }

    fn offset(&self, index: u64) -> u64 {
        HEADER + index * self.width as u64
    }

    /// Whether the corpus holds `sha1` (by its first `width` bytes). Blocking: about
    /// log2(n) − 8 positioned reads of `width` bytes, then one of at most 256 records.
    pub fn contains(&self, sha1: &[u8; 20]) -> std::io::Result<bool> {
        let key = sha1.get(..self.width).unwrap_or(&sha1[..]);
        let (mut low, mut high) = (0u64, self.count);
        let mut record = [0u8; 20];
        let record = record.get_mut(..self.width).unwrap_or(&mut []);
        while high - low > WINDOW {
            let middle = low + (high - low) / 2;
            read_at(&self.file, record, self.offset(middle))?;
            match (*record).cmp(key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        let records = usize::try_from(high - low).unwrap_or(0);
        let mut block = vec![0u8; records * self.width];
        read_at(&self.file, &mut block, self.offset(low))?;
        let (mut low, mut high) = (0usize, records);
        while low < high {
            let middle = low + (high - low) / 2;
            let record = block.get(middle * self.width..(middle + 1) * self.width).unwrap_or_default();
            match record.cmp(key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl BreachedPasswords for PwnedFile {
    fn name(&self) -> &'static str {
        "file"
    }

    /// On the blocking pool: the reads never hold up an executor thread.
    async fn contains(&self, sha1: &[u8; 20]) -> Result<bool, BreachSourceError> {
        let (corpus, sha1) = (self.clone(), *sha1);
        tokio::task::spawn_blocking(move || corpus.contains(&sha1))
            .await
            .map_err(|e| BreachSourceError(format!("lookup task failed: {e}")))?
            .map_err(|e| BreachSourceError(format!("reading the breached-password file: {e}")))
    }
}

/// The chance that a hash in no breach matches one of `count` prefixes of `width` bytes.
pub fn false_positive_rate(count: u64, width: usize) -> f64 {
    count as f64 / 2f64.powi(i32::try_from(8 * width).unwrap_or(i32::MAX))
}

/// What [`import`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Bytes of each SHA-1 kept (6 to 20).
    pub width: usize,
    /// Hashes seen fewer times than this in breaches are left out (1: none is).
    pub min_count: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { width: DEFAULT_WIDTH, min_count: 1 }
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Range files read (the `XXXXX.txt` layout), 0 for a single file.
    pub range_files: u64,
    /// Hashes written.
    pub written: u64,
    /// Lines repeating the previous hash, or whose prefix repeats the previous one kept.
    pub duplicates: u64,
    /// Hashes left out for a count below `min_count`.
    pub below_min_count: u64,
    /// The corpus file's size in bytes.
    pub bytes: u64,
}

/// Removes the temporary file unless the import finished.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes records as hashes arrive in order.
struct Builder {
    out: BufWriter<File>,
    options: ImportOptions,
    previous: Option<[u8; 20]>,
    kept: Option<[u8; 20]>,
    report: ImportReport,
}

impl Builder {
    fn push(&mut self, hash: [u8; 20], count: u64) -> Result<(), String> {
        if let Some(previous) = self.previous {
            match hash.cmp(&previous) {
                std::cmp::Ordering::Less => {
                    return Err("out of hash order: the input must be sorted by hash (Have I Been Pwned's \
                                ordered-by-hash download is; otherwise sort it first, e.g. LC_ALL=C sort)"
                        .to_owned());
                }
                std::cmp::Ordering::Equal => {
                    self.report.duplicates += 1;
                    return Ok(());
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        self.previous = Some(hash);
        if count < self.options.min_count {
            self.report.below_min_count += 1;
            return Ok(());
        }
        let width = self.options.width;
        if self.kept.is_some_and(|kept| kept.get(..width) == hash.get(..width)) {
            self.report.duplicates += 1;
            return Ok(());
        }
        self.out.write_all(hash.get(..width).unwrap_or_default()).map_err(|e| e.to_string())?;
        self.kept = Some(hash);
        self.report.written += 1;
        Ok(())
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Parses `HEX:COUNT` (or a bare `HEX`, counted once) where the hash is `prefix` followed by the
/// line's hexadecimal digits, 40 in all. `None` for a blank line.
fn parse_line(line: &[u8], prefix: &[u8]) -> Result<Option<([u8; 20], u64)>, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let (digits, count) = match line.iter().position(|b| *b == b':') {
        Some(colon) => (line.get(..colon).unwrap_or_default(), line.get(colon + 1..)),
        None => (line, None),
    };
    let expected = 40 - prefix.len();
    if digits.len() != expected {
        let hint = if digits.len() + prefix.len() == 32 {
            ": this looks like the NTLM download; strongroom needs the SHA-1 one"
        } else {
            ""
        };
        return Err(format!("expected {expected} hexadecimal digits, a colon and a count{hint}"));
    }
    let mut hash = [0u8; 20];
    let mut nibbles = prefix.iter().chain(digits).map(|d| hex_value(*d));
    for byte in &mut hash {
        let (Some(Some(high)), Some(Some(low))) = (nibbles.next(), nibbles.next()) else {
            return Err("the hash holds a character that is not a hexadecimal digit".to_owned());
        };
        *byte = high << 4 | low;
    }
    let count = match count {
        None => 1,
        Some(text) => std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .ok_or_else(|| "the count after the colon is not a whole number".to_owned())?,
    };
    Ok(Some((hash, count)))
}

/// Streams one text source into the builder; `prefix` is a range file's five digits.
fn read_lines(
    reader: impl Read,
    path: &Path,
    prefix: &[u8],
    builder: &mut Builder,
    progress: &mut dyn FnMut(u64),
) -> Result<(), PwnedError> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut line = Vec::with_capacity(64);
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(PwnedError::io(path))? == 0 {
            return Ok(());
        }
        number += 1;
        builder.report.lines += 1;
        if builder.report.lines.is_multiple_of(1 << 22) {
            progress(builder.report.lines);
        }
        let input = |why: String| PwnedError::Input { path: path.to_owned(), line: number, why };
        if let Some((hash, count)) = parse_line(&line, prefix).map_err(input)? {
            builder.push(hash, count).map_err(input)?;
        }
    }
}

/// The range files of a directory (`00000.txt` … `FFFFF.txt`, or without the extension), in hash order.
fn range_files(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, PwnedError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(PwnedError::io(dir))? {
        let path = entry.map_err(PwnedError::io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let stem = name.strip_suffix(".txt").unwrap_or(name);
        if stem.len() == 5 && stem.bytes().all(|b| hex_value(b).is_some()) {
            files.push((stem.to_ascii_uppercase().into_bytes(), path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(prefix, path)| (path, prefix)).collect())
}

/// Builds the corpus file `output` from `input`: a file of `HEX40:COUNT` lines sorted by hash (as
/// Have I Been Pwned's downloader writes it, CRLF or LF), `-` for standard input, or a directory
/// of range files (`XXXXX.txt` holding `HEX35:COUNT` lines). Memory stays constant: the input
/// must come sorted, and is refused at the first line out of order. The file is written beside
/// `output` under a temporary name, synced, renamed over `output`, and the directory synced.
/// `progress` hears the lines read so far, every few million.
pub fn import(
    input: &Path,
    output: &Path,
    options: ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport, PwnedError> {
    if !(MIN_WIDTH..=20).contains(&options.width) {
        return Err(PwnedError::Invalid(format!("the prefix width must be {MIN_WIDTH} to 20 bytes")));
    }
    if options.min_count == 0 {
        return Err(PwnedError::Invalid("the minimum count must be at least 1".into()));
    }
    let dir = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = output.file_name().and_then(|n| n.to_str()).unwrap_or("pwned-passwords.bin");
    let temp = TempFile { path: dir.join(format!(".{name}.{}.tmp", std::process::id())), keep: false };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp.path)
        .map_err(PwnedError::io(&temp.path))?;
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8] = u8::try_from(options.width).unwrap_or(DEFAULT_WIDTH as u8);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header).map_err(PwnedError::io(&temp.path))?;
    let mut builder = Builder { out, options, previous: None, kept: None, report: ImportReport::default() };
    if input == Path::new("-") {
        read_lines(std::io::stdin().lock(), Path::new("standard input"), b"", &mut builder, progress)?;
    } else if input.is_dir() {
        for (path, prefix) in range_files(input)? {
            let file = File::open(&path).map_err(PwnedError::io(&path))?;
            read_lines(file, &path, &prefix, &mut builder, progress)?;
            builder.report.range_files += 1;
        }
        if builder.report.range_files == 0 {
            return Err(PwnedError::Invalid(format!(
                "{} holds no range files (00000.txt … FFFFF.txt)",
                input.display()
            )));
        }
    } else {
        let file = File::open(input).map_err(PwnedError::io(input))?;
        read_lines(file, input, b"", &mut builder, progress)?;
    }
    let mut report = builder.report;
    if report.written == 0 {
        return Err(PwnedError::Invalid(format!(
            "{}: no hash to import ({} lines, {} below the minimum count)",
            input.display(),
            report.lines,
            report.below_min_count
        )));
    }
    let mut file = builder.out.into_inner().map_err(|e| PwnedError::io(&temp.path)(e.into_error()))?;
    let failed = PwnedError::io(&temp.path);
    let count_written = file
        .seek(SeekFrom::Start(16))
        .and_then(|_| file.write_all(&report.written.to_le_bytes()))
        .and_then(|()| file.sync_all())
        .and_then(|()| file.metadata());
    report.bytes = count_written.map_err(failed)?.len();
    drop(file);
    PwnedFile::open(&temp.path)?;
    std::fs::rename(&temp.path, output).map_err(PwnedError::io(output))?;
    let mut temp = temp;
    temp.keep = true;
    #[cfg(unix)]
    File::open(&dir).and_then(|d| d.sync_all()).map_err(PwnedError::io(&dir))?;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn sha(n: u32) -> [u8; 20] {
        let mut hash = [0u8; 20];
        // Spread over the space, with a distinct tail so full hashes differ.
        hash[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
        hash[16..].copy_from_slice(&n.to_be_bytes());
        hash
    }

    fn hex(hash: &[u8]) -> String {
        hash.iter().map(|b| format!("{b:02X}")).collect()
    }

    fn corpus(dir: &Path, hashes: &mut [[u8; 20]], width: usize) -> PwnedFile {
        hashes.sort();
        let text: String = hashes.iter().map(|h| format!("{}:{}\r\n", hex(h), 3)).collect();
        std::fs::write(dir.join("in.txt"), text).unwrap();
        let out = dir.join("corpus.bin");
        import(&dir.join("in.txt"), &out, ImportOptions { width, min_count: 1 }, &mut |_| {}).unwrap();
        PwnedFile::open(&out).unwrap()
    }

    #[test]
    fn binary_search_finds_every_entry_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        for n in [1u32, 2, 3, 255, 256, 257, 1000, 5000] {
            let mut hashes: Vec<[u8; 20]> = (1..=n).map(|i| sha(2 * i)).collect();
            let file = corpus(dir.path(), &mut hashes, DEFAULT_WIDTH);
            assert_eq!(file.len(), u64::from(n));
            for hash in &hashes {
                assert!(file.contains(hash).unwrap(), "{n}: {}", hex(hash));
            }
            for i in 0..n {
                assert!(!file.contains(&sha(2 * i + 1)).unwrap(), "{n}: absent {i}");
            }
            // First and last entries, and keys outside the range at either end.
            assert!(file.contains(hashes.first().unwrap()).unwrap());
            assert!(file.contains(hashes.last().unwrap()).unwrap());
            assert!(!file.contains(&[0u8; 20]).unwrap());
            assert!(!file.contains(&[0xff; 20]).unwrap());
        }
    }

    #[test]
    fn truncated_prefixes_match_by_prefix_and_full_hashes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut hashes = vec![sha(7), sha(8)];
        let file = corpus(dir.path(), &mut hashes, 20);
        let mut near = sha(7);
        near[19] ^= 1;
        assert!(file.contains(&sha(7)).unwrap() && !file.contains(&near).unwrap(), "20 bytes: exact");
        let file = corpus(dir.path(), &mut hashes, MIN_WIDTH);
        assert!(file.contains(&near).unwrap(), "6 bytes: the prefix decides");
        assert!(file.false_positive_rate() > 0.0 && file.false_positive_rate() < 1e-13);
    }

    #[test]
    fn empty_short_and_cut_files_are_refused_and_an_empty_corpus_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(PwnedFile::open(&path), Err(PwnedError::Corrupt { .. })), "empty file");
        let mut header = Vec::from(*MAGIC);
        header.push(8);
        header.extend([0u8; 7]);
        header.extend(0u64.to_le_bytes());
        std::fs::write(&path, &header).unwrap();
        let empty = PwnedFile::open(&path).unwrap();
        assert!(empty.is_empty() && !empty.contains(&sha(1)).unwrap(), "no records: nothing is found");
        // One record promised, 7 bytes given; then a stray byte after a whole record.
        header[16..].copy_from_slice(&1u64.to_le_bytes());
        std::fs::write(&path, [&header[..], &[1u8; 7]].concat()).unwrap();
        let err = PwnedFile::open(&path).unwrap_err();
        assert!(err.to_string().contains("promises 1 records of 8 bytes"), "{err}");
        std::fs::write(&path, [&header[..], &[1u8; 9]].concat()).unwrap();
        assert!(matches!(PwnedFile::open(&path), Err(PwnedError::Corrupt { .. })));
        header[8] = 5;
        std::fs::write(&path, [&header[..], &[1u8; 5]].concat()).unwrap();
        assert!(matches!(PwnedFile::open(&path), Err(PwnedError::Corrupt { .. })), "width below 6");
        std::fs::write(&path, b"5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:1\n").unwrap();
        assert!(matches!(PwnedFile::open(&path), Err(PwnedError::Corrupt { .. })), "a text file");
        assert!(PwnedFile::open(&dir.path().join("missing.bin")).unwrap_err().is_not_found());
    }

    #[test]
    fn import_refuses_unsorted_and_malformed_input_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("corpus.bin");
        let input = dir.path().join("in.txt");
        let (a, b) = (hex(&sha(1)), hex(&sha(2)));
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        for (text, needle) in [
            (format!("{high}:1\n{low}:1\n"), "line 2: out of hash order"),
            (format!("{low}:1\nnot a hash\n"), "line 2: expected 40 hexadecimal digits"),
            (format!("{}:1\n", &low[..32]), "NTLM"),
            (format!("{}Z:1\n", &low[..39]), "not a hexadecimal digit"),
            (format!("{low}:many\n"), "not a whole number"),
            (String::new(), "no hash to import"),
        ] {
            std::fs::write(&input, &text).unwrap();
            let err = import(&input, &out, ImportOptions::default(), &mut |_| {}).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains(&low[..32]) && !err.contains(&high[..32]) && !err.contains("not a hash"), "{err}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the input is left: {err}");
        }
        assert!(import(&input, &out, ImportOptions { width: 5, min_count: 1 }, &mut |_| {}).is_err());
    }

    #[test]
    fn import_counts_duplicates_and_minimum_counts_and_reads_range_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut hashes: Vec<[u8; 20]> = (0..50).map(sha).collect();
        hashes.sort();
        let mut text = String::new();
        for (i, hash) in hashes.iter().enumerate() {
            text.push_str(&format!("{}:{}\n", hex(hash).to_lowercase(), i % 3));
        }
        text.push_str(&format!("{}:9\n\n", hex(hashes.last().unwrap())));
        std::fs::write(dir.path().join("in.txt"), &text).unwrap();
        let out = dir.path().join("corpus.bin");
        let report =
            import(&dir.path().join("in.txt"), &out, ImportOptions { width: 8, min_count: 1 }, &mut |_| {}).unwrap();
        assert_eq!((report.lines, report.duplicates, report.below_min_count), (52, 1, 17));
        assert_eq!(report.written, 33);
        assert_eq!(report.bytes, 24 + 33 * 8);
        let file = PwnedFile::open(&out).unwrap();
        assert!(file.contains(&hashes[1]).unwrap() && !file.contains(&hashes[0]).unwrap(), "count 0 is left out");

        // The same hashes as range files: XXXXX.txt with the 35-digit suffixes.
        let ranges = dir.path().join("ranges");
        std::fs::create_dir(&ranges).unwrap();
        for hash in &hashes {
            let full = hex(hash);
            let (prefix, suffix) = full.split_at(5);
            let path = ranges.join(format!("{prefix}.txt"));
            let mut body = std::fs::read_to_string(&path).unwrap_or_default();
            body.push_str(&format!("{suffix}:2\r\n"));
            std::fs::write(path, body).unwrap();
        }
        std::fs::write(ranges.join("README"), "not a range file").unwrap();
        let report = import(&ranges, &out, ImportOptions::default(), &mut |_| {}).unwrap();
        assert_eq!((report.written, report.lines), (50, 50));
        assert!(report.range_files > 1);
        let file = PwnedFile::open(&out).unwrap();
        assert!(hashes.iter().all(|h| file.contains(h).unwrap()));
    }

    #[tokio::test]
    async fn the_port_answers_from_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let mut hashes = vec![sha(3)];
        let file = corpus(dir.path(), &mut hashes, DEFAULT_WIDTH);
        let port: &dyn BreachedPasswords = &file;
        assert!(port.contains(&sha(3)).await.unwrap());
        assert!(!port.contains(&sha(4)).await.unwrap());
        assert_eq!(port.name(), "file");
    }
}
