//! The data directory: created on first start (mode 0700) with the SQLite database, the local
//! root key (mode 0600) and a development TLS certificate for localhost, 127.0.0.1 and ::1,
//! signed by a throw-away local CA whose certificate (`tls/ca.pem`) clients can trust.
//! Must never: overwrite an existing key or certificate, or leave a private key readable by others.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// Paths of the development TLS files.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// Certificate chain (leaf, then CA).
    pub cert: PathBuf,
    /// Leaf private key (0600).
    pub key: PathBuf,
    /// The CA certificate to trust in clients (`curl --cacert`).
    pub ca: PathBuf,
}

impl DevTls {
    /// The files' places inside `tls_dir`.
    pub fn in_dir(tls_dir: &Path) -> Self {
        Self { cert: tls_dir.join("cert.pem"), key: tls_dir.join("key.pem"), ca: tls_dir.join("ca.pem") }
    }
}

/// Creates `dir` (0700) when missing.
/// Takes the data directory's lock (`strongroom.lock`, an exclusive advisory lock held for the
/// life of the returned file): one `serve` per SQLite data directory, so that process alone
/// runs the background jobs. A second `serve` is refused instead of racing the first.
pub fn lock_for_serving(dir: &Path) -> anyhow::Result<std::fs::File> {
    ensure_dir(dir)?;
    let path = dir.join("strongroom.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another strongroom is serving the data directory {} (it holds strongroom.lock): stop it first, \
             or run several nodes on PostgreSQL",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(err)) => Err(err).with_context(|| format!("cannot lock {}", path.display())),
    }
}

pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

fn write_new(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Creates the development certificate unless it exists. Returns whether it was created now.
pub fn ensure_dev_tls(tls_dir: &Path) -> anyhow::Result<(DevTls, bool)> {
    let files = DevTls::in_dir(tls_dir);
    if files.cert.exists() && files.key.exists() {
        return Ok((files, false));
    }
    ensure_dir(tls_dir)?;
    let now = time::OffsetDateTime::now_utc();

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "strongroom development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = now + time::Duration::days(3650);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.not_before = now - time::Duration::days(1);
    leaf_params.not_after = now + time::Duration::days(397);
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key)?;

    let chain = format!("{}{}", leaf_cert.pem(), ca_cert.pem());
    let mut key_pem = leaf_key.serialize_pem();
    let written = write_new(&files.key, key_pem.as_bytes(), true);
    zeroize::Zeroize::zeroize(&mut key_pem);
    written?;
    write_new(&files.cert, chain.as_bytes(), false)?;
    if !files.ca.exists() {
        write_new(&files.ca, ca_cert.pem().as_bytes(), false)?;
    }
    Ok((files, true))
}

/// Creates an empty SQLite database file with mode 0600 before SQLite does (SQLite would use the
/// process umask; its `-wal` and `-shm` files copy the main file's mode).
pub fn precreate_sqlite_file(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return Ok(());
    };
    let path = Path::new(rest.split('?').next().unwrap_or(rest));
    if rest.starts_with(":memory:") || path.as_os_str().is_empty() || path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    write_new(path, b"", true)
}
