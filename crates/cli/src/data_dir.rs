//! The data directory: created on first start (mode 0700) with the SQLite database, the local
//! root key (mode 0600) and a development TLS certificate for localhost, 127.0.0.1 and ::1,
//! signed by a local development CA whose certificate (`tls/ca.pem`) clients trust.
//!
//! The development chain passes strict X.509 verification (OpenSSL's `X509_V_FLAG_X509_STRICT`,
//! Python 3.13's default, sslyze): the CA has a critical basicConstraints (CA, path length 0), a
//! critical keyUsage of keyCertSign and cRLSign, a subject key identifier, and a critical
//! nameConstraints allowing only `localhost` and loopback addresses, so its key can sign nothing
//! else; the leaf has authority and subject key identifiers, basicConstraints CA:false, keyUsage
//! digitalSignature, extendedKeyUsage serverAuth and the three names as SANs, and lives 90 days.
//! At every start a leaf with less than 30 days left (or of an older kind) is replaced by a new
//! one from the same CA, whose key (`tls/ca-key.pem`, 0600) is kept for that, so `ca.pem` stays
//! trusted; a data directory from before, whose CA key was discarded, gets a new CA once.
//! Must never: overwrite a root key, replace a configured certificate, or leave a private key
//! readable by others.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair,
    KeyUsagePurpose, NameConstraints,
};
use time::{Duration, OffsetDateTime};

/// Paths of the development TLS files.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// Certificate chain (leaf, then CA).
    pub cert: PathBuf,
    /// Leaf private key (0600).
    pub key: PathBuf,
    /// The CA certificate to trust in clients (`curl --cacert`).
    pub ca: PathBuf,
    /// The CA's private key (0600), kept to renew the leaf under the same CA.
    pub ca_key: PathBuf,
}

impl DevTls {
    /// The files' places inside `tls_dir`.
    pub fn in_dir(tls_dir: &Path) -> Self {
        Self {
            cert: tls_dir.join("cert.pem"),
            key: tls_dir.join("key.pem"),
            ca: tls_dir.join("ca.pem"),
            ca_key: tls_dir.join("ca-key.pem"),
        }
    }
}

/// How long a development leaf certificate lives (the CA/Browser Forum's coming maximum for
/// public certificates is 47 days; 90 is what ACME CAs issue and strict clients accept).
pub const DEV_LEAF_LIFETIME: Duration = Duration::days(90);
/// A leaf with less than this left is replaced at start.
pub const DEV_LEAF_RENEW_BEFORE: Duration = Duration::days(30);
/// How long the development CA lives.
const DEV_CA_LIFETIME: Duration = Duration::days(3650);
/// The names the development certificate is for.
const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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

/// Writes `contents` under a temporary name and renames it over `path` (mode 0600 or 0644).
fn replace(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let partial = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&partial);
    write_new(&partial, contents, private)?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Creates or renews the development certificate: a new leaf when there is none, when it has less
/// than [`DEV_LEAF_RENEW_BEFORE`] left, or when it is of an older kind. Returns whether it did.
pub fn ensure_dev_tls(tls_dir: &Path) -> anyhow::Result<(DevTls, bool)> {
    ensure_dev_tls_at(tls_dir, OffsetDateTime::now_utc())
}

/// [`ensure_dev_tls`] at the time `now`.
pub fn ensure_dev_tls_at(tls_dir: &Path, now: OffsetDateTime) -> anyhow::Result<(DevTls, bool)> {
    let files = DevTls::in_dir(tls_dir);
    if leaf_is_current(&files, now) {
        return Ok((files, false));
    }
    ensure_dir(tls_dir)?;
    let (ca_params, ca_key) = match existing_ca(&files, now) {
        Some(ca) => ca,
        None => {
            let ca_key = KeyPair::generate()?;
            let mut params = ca_params();
            params.not_before = now - Duration::days(1);
            params.not_after = now + DEV_CA_LIFETIME;
            let ca_cert = params.self_signed(&ca_key)?;
            let mut key_pem = ca_key.serialize_pem();
            let written = replace(&files.ca_key, key_pem.as_bytes(), true);
            zeroize::Zeroize::zeroize(&mut key_pem);
            written?;
            replace(&files.ca, ca_cert.pem().as_bytes(), false)?;
            if files.cert.exists() {
                tracing::warn!(ca = %files.ca.display(), "the development CA was made anew: clients must trust the new ca.pem");
            }
            (ca_params(), ca_key)
        }
    };
    // The issuer as the leaf names it: the CA's name and key identifier come from the same
    // parameters and key as the CA certificate's.
    let issuer = ca_params.self_signed(&ca_key)?;

    let names: Vec<String> = DEV_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = now - Duration::hours(1);
    leaf_params.not_after = leaf_params.not_before + DEV_LEAF_LIFETIME;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer, &ca_key)?;

    let ca_pem = std::fs::read_to_string(&files.ca).with_context(|| format!("cannot read {}", files.ca.display()))?;
    let chain = format!("{}{}", leaf_cert.pem(), ca_pem);
    let mut key_pem = leaf_key.serialize_pem();
    let written = replace(&files.key, key_pem.as_bytes(), true);
    zeroize::Zeroize::zeroize(&mut key_pem);
    written?;
    replace(&files.cert, chain.as_bytes(), false)?;
    Ok((files, true))
}

/// The development CA's parameters, the same at every start (its name and constraints).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, "strongroom development CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::IpAddress(CidrSubnet::V4([127, 0, 0, 0], [255, 0, 0, 0])),
            GeneralSubtree::IpAddress(CidrSubnet::V6(std::net::Ipv6Addr::LOCALHOST.octets(), [0xff; 16])),
        ],
        excluded_subtrees: Vec::new(),
    });
    params
}

/// The CA's parameters and key, when `ca-key.pem` holds the key of the certificate in `ca.pem`
/// and that certificate outlives a new leaf.
fn existing_ca(files: &DevTls, now: OffsetDateTime) -> Option<(CertificateParams, KeyPair)> {
    let key_pem = strongroom_crypto::secret_file::read_secret_file(&files.ca_key).ok()?;
    let key = KeyPair::from_pem(&key_pem).ok()?;
    let ca_pem = std::fs::read(&files.ca).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&ca_pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let outlives_a_leaf = cert.validity().not_after.to_datetime() - now > DEV_LEAF_LIFETIME;
    (outlives_a_leaf && cert.public_key().raw == key.public_key_der().as_slice()).then_some((ca_params(), key))
}

/// Whether the leaf in `cert.pem` can stay: it fits `key.pem`, has more than
/// [`DEV_LEAF_RENEW_BEFORE`] left, lives at most [`DEV_LEAF_LIFETIME`], and names its issuer's
/// key (older development certificates did not, and strict verifiers refuse them).
fn leaf_is_current(files: &DevTls, now: OffsetDateTime) -> bool {
    let (Ok(chain), Ok(key_pem)) =
        (std::fs::read(&files.cert), strongroom_crypto::secret_file::read_secret_file(&files.key))
    else {
        return false;
    };
    let Ok(key) = KeyPair::from_pem(&key_pem) else { return false };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&chain) else { return false };
    let Ok(leaf) = pem.parse_x509() else { return false };
    let validity = leaf.validity();
    let (not_before, not_after) = (validity.not_before.to_datetime(), validity.not_after.to_datetime());
    let names_issuer_key = leaf
        .extensions()
        .iter()
        .any(|e| matches!(e.parsed_extension(), x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(_)));
    leaf.public_key().raw == key.public_key_der().as_slice()
        && not_after - now > DEV_LEAF_RENEW_BEFORE
        && not_after - not_before <= DEV_LEAF_LIFETIME
        && names_issuer_key
        && files.ca_key.exists()
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

#[cfg(test)]
mod tests {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::X509Certificate;

    use super::*;

    fn certs(path: &Path) -> Vec<Vec<u8>> {
        let text = std::fs::read(path).unwrap();
        x509_parser::pem::Pem::iter_from_buffer(&text).map(|pem| pem.unwrap().contents).collect()
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    fn extension<'a>(cert: &'a X509Certificate<'a>, wanted: &str) -> (bool, &'a ParsedExtension<'a>) {
        let found = cert
            .extensions()
            .iter()
            .find(|e| format!("{:?}", e.parsed_extension()).starts_with(wanted))
            .unwrap_or_else(|| panic!("no {wanted}"));
        (found.critical, found.parsed_extension())
    }

    fn key_ids(leaf: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> (Vec<u8>, Vec<u8>) {
        let aki = match extension(leaf, "AuthorityKeyIdentifier").1 {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().unwrap().0.to_vec(),
            _ => unreachable!(),
        };
        let ski = match extension(ca, "SubjectKeyIdentifier").1 {
            ParsedExtension::SubjectKeyIdentifier(ski) => ski.0.to_vec(),
            _ => unreachable!(),
        };
        (aki, ski)
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The chain has what strict verifiers require (the Python test in testkit/tests/transport.rs
    /// runs one against a live server).
    #[test]
    fn the_development_chain_has_what_strict_verifiers_require() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (files, created) = ensure_dev_tls_at(dir.path(), now).unwrap();
        assert!(created);
        let chain = certs(&files.cert);
        assert_eq!(chain.len(), 2, "leaf, then CA");
        assert_eq!(certs(&files.ca), vec![chain[1].clone()]);
        let (leaf, ca) = (parse(&chain[0]), parse(&chain[1]));

        // The CA.
        let (critical, constraints) = extension(&ca, "BasicConstraints");
        assert!(
            critical
                && matches!(constraints, ParsedExtension::BasicConstraints(bc) if bc.ca && bc.path_len_constraint == Some(0))
        );
        let (critical, usage) = extension(&ca, "KeyUsage");
        assert!(critical && matches!(usage, ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() && ku.crl_sign()));
        let (critical, names) = extension(&ca, "NameConstraints");
        assert!(
            critical
                && matches!(names, ParsedExtension::NameConstraints(nc) if nc.permitted_subtrees.as_ref().is_some_and(|p| p.len() == 3))
        );
        assert_eq!(ca.subject(), ca.issuer());

        // The leaf.
        let (aki, ski) = key_ids(&leaf, &ca);
        assert_eq!(aki, ski, "the leaf names its issuer's key");
        extension(&leaf, "SubjectKeyIdentifier");
        assert_eq!(leaf.issuer(), ca.subject());
        let (critical, constraints) = extension(&leaf, "BasicConstraints");
        assert!(critical && matches!(constraints, ParsedExtension::BasicConstraints(bc) if !bc.ca));
        let (_, usage) = extension(&leaf, "ExtendedKeyUsage");
        assert!(matches!(usage, ParsedExtension::ExtendedKeyUsage(eku) if eku.server_auth));
        let (_, usage) = extension(&leaf, "KeyUsage");
        assert!(matches!(usage, ParsedExtension::KeyUsage(ku) if ku.digital_signature() && !ku.key_cert_sign()));
        let sans = match extension(&leaf, "SubjectAlternativeName").1 {
            ParsedExtension::SubjectAlternativeName(san) => san
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(name) => (*name).to_owned(),
                    GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            _ => unreachable!(),
        };
        assert_eq!(sans.len(), 3, "{sans:?}");
        assert_eq!(sans[0], "localhost");
        let validity = leaf.validity();
        let lifetime = validity.not_after.to_datetime() - validity.not_before.to_datetime();
        assert!(lifetime <= Duration::days(90), "{lifetime}");
        assert!(validity.not_before.to_datetime() <= now);

        #[cfg(unix)]
        {
            assert_eq!(mode(&files.key), 0o600);
            assert_eq!(mode(&files.ca_key), 0o600);
            assert_eq!(mode(&files.ca), 0o644);
        }
    }

    #[test]
    fn a_leaf_near_its_end_is_renewed_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (files, _) = ensure_dev_tls_at(dir.path(), now).unwrap();
        let first = certs(&files.cert);
        let ca_before = std::fs::read(&files.ca).unwrap();

        // Still current: kept as is.
        let (_, created) = ensure_dev_tls_at(dir.path(), now + Duration::days(59)).unwrap();
        assert!(!created);
        assert_eq!(certs(&files.cert), first);

        // Less than 30 days left: a new leaf from the same CA; ca.pem does not change.
        let later = now + Duration::days(61);
        let (_, created) = ensure_dev_tls_at(dir.path(), later).unwrap();
        assert!(created);
        assert_eq!(std::fs::read(&files.ca).unwrap(), ca_before, "clients keep trusting the same CA");
        let renewed = certs(&files.cert);
        assert_ne!(renewed[0], first[0]);
        let (leaf, ca) = (parse(&renewed[0]), parse(&renewed[1]));
        let (aki, ski) = key_ids(&leaf, &ca);
        assert_eq!(aki, ski);
        assert_eq!(leaf.issuer(), ca.subject());
        assert!(leaf.validity().not_after.to_datetime() - later > Duration::days(85));
        // The new key fits the new certificate (the server would refuse a mismatch).
        let key_pem = std::fs::read(&files.key).unwrap();
        let chain_pem = std::fs::read(&files.cert).unwrap();
        assert!(strongroom_http::tls::server_config(&chain_pem, &key_pem).is_ok());
    }

    #[test]
    fn an_older_development_certificate_is_replaced_with_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (files, _) = ensure_dev_tls_at(dir.path(), now).unwrap();
        let ca_before = std::fs::read(&files.ca).unwrap();
        // As before this change: no CA key kept.
        std::fs::remove_file(&files.ca_key).unwrap();
        let (_, created) = ensure_dev_tls_at(dir.path(), now).unwrap();
        assert!(created);
        assert_ne!(std::fs::read(&files.ca).unwrap(), ca_before);
        assert!(files.ca_key.exists());
        let chain = certs(&files.cert);
        let (aki, ski) = key_ids(&parse(&chain[0]), &parse(&chain[1]));
        assert_eq!(aki, ski);
        assert_eq!(certs(&files.ca), vec![chain[1].clone()]);
    }
}
