//! Mailers: SMTP through lettre (STARTTLS or implicit TLS required unless the server is on this
//! machine, DKIM signing when a key is configured: ed25519-sha256 (RFC 8463) or rsa-sha256, chosen
//! by the key or by configuration), and the development mailbox, which writes
//! each message as an `.eml` file into the data directory instead of sending it.
//! Must never: send a message without TLS to a server that is not on the loopback interface, log
//! an address, a subject or a body, or build a header from unchecked text (addresses are parsed
//! as mailboxes, which refuses line breaks; subjects are encoded by lettre).

use std::path::PathBuf;

use async_trait::async_trait;
use lettre::message::dkim::{DkimConfig, DkimSigningKey};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use strongroom_domain::mail::{Mail, MailError, Mailer};
use strongroom_types::Secret;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// STARTTLS, required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only for a server on the loopback interface.
    None,
}

/// SMTP settings.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The server's host name.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Connection security.
    pub security: SmtpSecurity,
    /// User name and password, if the server wants them.
    pub credentials: Option<(String, Secret<String>)>,
    /// The sender, e.g. `Shop <security@shop.example>`.
    pub from: String,
    /// DKIM signing, if configured.
    pub dkim: Option<DkimSettings>,
}

/// The DKIM signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DkimAlgorithm {
    /// Whatever the key is: an Ed25519 key signs `ed25519-sha256`, an RSA key `rsa-sha256`.
    #[default]
    Auto,
    /// `rsa-sha256` (RFC 6376), which every receiver verifies. Signing uses the `rsa` crate, which
    /// has an open timing side-channel advisory (RUSTSEC-2023-0071, see docs/configuration.md).
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463): small keys and signatures, constant-time signing; verified by
    /// fewer receivers than RSA, so some domains publish both.
    Ed25519Sha256,
}

/// DKIM signing settings.
#[derive(Debug, Clone)]
pub struct DkimSettings {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The private key file's text: an RSA key as PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8
    /// (`BEGIN PRIVATE KEY`) PEM, an Ed25519 key as PKCS#8 PEM (`openssl genpkey -algorithm
    /// ed25519`) or as the base64 of its 32-byte seed (dkimpy's `dknewkey --ktype ed25519`).
    pub private_key: Secret<String>,
    /// Which algorithm; [`DkimAlgorithm::Auto`] follows the key.
    pub algorithm: DkimAlgorithm,
}

/// The DER of an Ed25519 PKCS#8 key after its outer SEQUENCE header (RFC 8410): the version (0,
/// or 1 when the public key follows), the algorithm 1.3.101.112, then the 32-byte seed as an OCTET
/// STRING inside an OCTET STRING.
const ED25519_PKCS8_PREFIX: [u8; 14] =
    [0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
const RSA_ENCRYPTION_OID: [u8; 11] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The 32-byte seed of an Ed25519 PKCS#8 key (version 0 or 1, a public key after it ignored).
fn ed25519_pkcs8_seed(der: &[u8]) -> Option<&[u8]> {
    // A one-byte length: the key is under 128 bytes.
    let [0x30, length, rest @ ..] = der else { return None };
    if usize::from(*length) != rest.len() || rest.len() < ED25519_PKCS8_PREFIX.len() + 32 {
        return None;
    }
    let (head, tail) = rest.split_at(ED25519_PKCS8_PREFIX.len());
    let version = head[2] == 0 || head[2] == 1;
    let fixed = head[..2] == ED25519_PKCS8_PREFIX[..2] && head[3..] == ED25519_PKCS8_PREFIX[3..];
    (version && fixed).then(|| &tail[..32])
}

/// The signing key in `text`, of the configured algorithm (or the key's own with `Auto`). The
/// error never quotes the file.
pub fn dkim_signing_key(text: &str, algorithm: DkimAlgorithm) -> anyhow::Result<DkimSigningKey> {
    use lettre::message::dkim::DkimSigningAlgorithm as Lettre;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    use zeroize::Zeroizing;

    let text = text.trim();
    let (found, key) = if text.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        let key = DkimSigningKey::new(text, Lettre::Rsa).map_err(|_| anyhow::anyhow!("the RSA key cannot be read"))?;
        (DkimAlgorithm::RsaSha256, key)
    } else if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        let der = Zeroizing::new(
            PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
                .map_err(|_| anyhow::anyhow!("the PKCS#8 PEM key cannot be read"))?,
        );
        let der = der.secret_pkcs8_der();
        if let Some(seed) = ed25519_pkcs8_seed(der) {
            let encoded = Zeroizing::new(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, seed));
            let key = DkimSigningKey::new(&encoded, Lettre::Ed25519)
                .map_err(|_| anyhow::anyhow!("the Ed25519 key cannot be read"))?;
            (DkimAlgorithm::Ed25519Sha256, key)
        } else if der.windows(RSA_ENCRYPTION_OID.len()).take(32).any(|w| w == RSA_ENCRYPTION_OID) {
            // lettre reads PKCS#1 only: convert.
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::DecodePrivateKey;
            let rsa =
                rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|_| anyhow::anyhow!("the RSA key cannot be read"))?;
            let pkcs1 = rsa
                .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                .map_err(|_| anyhow::anyhow!("the RSA key cannot be converted"))?;
            let key =
                DkimSigningKey::new(&pkcs1, Lettre::Rsa).map_err(|_| anyhow::anyhow!("the RSA key cannot be read"))?;
            (DkimAlgorithm::RsaSha256, key)
        } else {
            anyhow::bail!("the PKCS#8 key is neither Ed25519 nor RSA");
        }
    } else if !text.starts_with("-----")
        && base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
            .map(|mut seed| {
                let fits = seed.len() == 32;
                zeroize::Zeroize::zeroize(&mut seed);
                fits
            })
            .unwrap_or(false)
    {
        let key = DkimSigningKey::new(text, Lettre::Ed25519)
            .map_err(|_| anyhow::anyhow!("the Ed25519 key cannot be read"))?;
        (DkimAlgorithm::Ed25519Sha256, key)
    } else {
        anyhow::bail!(
            "not a supported key: use an RSA key (PKCS#1 or PKCS#8 PEM) or an Ed25519 key (PKCS#8 PEM, or the base64 of its 32-byte seed)"
        );
    };
    match algorithm {
        DkimAlgorithm::Auto => Ok(key),
        wanted if wanted == found => Ok(key),
        DkimAlgorithm::RsaSha256 => anyhow::bail!("mail.dkim_algorithm is rsa-sha256 but the key is an Ed25519 key"),
        DkimAlgorithm::Ed25519Sha256 => {
            anyhow::bail!("mail.dkim_algorithm is ed25519-sha256 but the key is an RSA key")
        }
    }
}

/// Builds the message for a mail, DKIM-signed when configured.
fn message(from: &Mailbox, mail: &Mail, dkim: Option<&DkimConfig>) -> Result<Message, MailError> {
    let to: Mailbox =
        mail.to.expose().parse().map_err(|_| MailError::Permanent("the recipient is not a valid address".into()))?;
    let subject: String = mail.subject.chars().filter(|c| !c.is_control()).collect();
    let mut message = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(mail.text.expose().clone(), mail.html.expose().clone()))
        .map_err(|e| MailError::Permanent(format!("the message cannot be built: {e}")))?;
    if let Some(config) = dkim {
        message.sign(config);
    }
    Ok(message)
}

/// DKIM relaxed/relaxed over From, To, Subject and Date. Written out rather than lettre's
/// default because, in our interop test against dkimpy, lettre's simple header canonicalization
/// produced signatures that do not verify, and naming MIME-Version or Content-Type breaks them too
/// (lettre writes those outside the headers it signs). Relaxed is what most signers use and
/// survives re-folding by relays.
fn dkim_config(selector: &str, domain: &str, key: DkimSigningKey) -> DkimConfig {
    use lettre::message::dkim::{DkimCanonicalization, DkimCanonicalizationType};
    use lettre::message::header::HeaderName;
    let headers = ["From", "To", "Subject", "Date"].into_iter().map(HeaderName::new_from_ascii_str).collect();
    let canonicalization =
        DkimCanonicalization { header: DkimCanonicalizationType::Relaxed, body: DkimCanonicalizationType::Relaxed };
    DkimConfig::new(selector.to_owned(), domain.to_owned(), key, headers, canonicalization)
}

/// Sends through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    dkim: Option<DkimConfig>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").field("dkim", &self.dkim.is_some()).finish_non_exhaustive()
    }
}

fn loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl SmtpMailer {
    /// A mailer; fails on an invalid sender or DKIM key, or plain SMTP to another machine.
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings.from.parse().map_err(|_| anyhow::anyhow!("mail.from is not a valid mailbox"))?;
        let mut builder = match settings.security {
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
            SmtpSecurity::None if loopback(&settings.host) => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpSecurity::None => {
                anyhow::bail!("mail.smtp_security = \"none\" is only allowed for a server on this machine")
            }
        };
        builder = builder.port(settings.port).timeout(Some(std::time::Duration::from_secs(20)));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().clone()));
        }
        let dkim = match &settings.dkim {
            Some(dkim) => {
                let key = dkim_signing_key(dkim.private_key.expose(), dkim.algorithm)
                    .map_err(|e| anyhow::anyhow!("mail.dkim_private_key_file: {e}"))?;
                Some(dkim_config(&dkim.selector, &dkim.domain, key))
            }
            None => None,
        };
        Ok(Self { transport: builder.build(), from, dkim })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = message(&self.from, mail, self.dkim.as_ref())?;
        // The server's reply text often repeats the recipient's address: only its code is kept.
        let code = |err: &lettre::transport::smtp::Error| {
            err.status().map_or_else(|| "no reply code".to_owned(), |c| format!("reply {c}"))
        };
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => {
                Err(MailError::Permanent(format!("the SMTP server refused the mail ({})", code(&err))))
            }
            Err(err) if err.is_transient() => {
                Err(MailError::Temporary(format!("the SMTP server deferred the mail ({})", code(&err))))
            }
            Err(err) if err.is_timeout() => {
                Err(MailError::Temporary("the SMTP server did not answer in time".to_owned()))
            }
            Err(_) => Err(MailError::Temporary("the SMTP connection failed".to_owned())),
        }
    }
}

/// The development mailbox: each message becomes `<data dir>/mail/<time>-<kind>.eml` (mode 0600).
#[derive(Debug)]
pub struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    /// A mailbox in `dir` (created when missing).
    pub fn new(dir: PathBuf, from: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let from: Mailbox = from.parse().map_err(|_| anyhow::anyhow!("mail.from is not a valid mailbox"))?;
        Ok(Self { dir, from })
    }

    /// Where the messages go.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = message(&self.from, mail, None)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = self.dir.join(format!("{nanos:024}-{}.eml", mail.kind));
        let bytes = message.formatted();
        let write = tokio::task::spawn_blocking(move || write_private(&path, &bytes));
        write.await.map_err(|e| MailError::Temporary(e.to_string()))?.map_err(|e| MailError::Temporary(e.to_string()))
    }
}

/// Writes the file under a temporary name and renames it into place, so a reader (the mailbox
/// page, a test) never sees half a message.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let partial = path.with_extension("eml.part");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn mail(to: &str, subject: &str) -> Mail {
        Mail {
            to: Secret::new(to.to_owned()),
            subject: subject.to_owned(),
            text: Secret::new("text".into()),
            html: Secret::new("<p>html</p>".into()),
            kind: "test".to_owned(),
        }
    }

    #[test]
    fn header_injection_is_impossible() {
        let from: Mailbox = "Shop <security@shop.example>".parse().unwrap();
        assert!(message(&from, &mail("victim@example.com\r\nBcc: all@example.com", "hi"), None).is_err());
        let built = message(&from, &mail("ann@example.com", "hi\r\nBcc: all@example.com"), None).unwrap();
        let text = String::from_utf8(built.formatted()).unwrap();
        assert!(!text.contains("\r\nBcc:"), "{text}");
    }

    #[test]
    fn the_dkim_key_decides_the_algorithm_and_an_explicit_one_must_fit() {
        // An Ed25519 key as PKCS#8 PEM (v1, as openssl writes it) and as the base64 of its seed.
        let pkcs8 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap().serialize_pem();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pkcs8.as_bytes())
            .map(|k: rustls::pki_types::PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
            .unwrap();
        let seed = ed25519_pkcs8_seed(&der).unwrap().to_vec();
        let raw = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &seed);
        for text in [pkcs8.as_str(), raw.as_str()] {
            assert!(dkim_signing_key(text, DkimAlgorithm::Auto).is_ok());
            assert!(dkim_signing_key(text, DkimAlgorithm::Ed25519Sha256).is_ok());
            let err = dkim_signing_key(text, DkimAlgorithm::RsaSha256).err().unwrap().to_string();
            assert!(err.contains("rsa-sha256 but the key is an Ed25519 key"), "{err}");
        }
        // PKCS#8 v2 (RFC 8410, with the public key after the seed) reads to the same seed.
        let mut v2 = vec![0x30, 0x51];
        v2.extend_from_slice(&ED25519_PKCS8_PREFIX);
        v2[4] = 0x01;
        v2.extend_from_slice(&seed);
        v2.extend_from_slice(&[0x81, 0x21, 0x00]);
        v2.extend_from_slice(&[7u8; 32]);
        assert_eq!(ed25519_pkcs8_seed(&v2), Some(seed.as_slice()));
        // Neither: refused without quoting the file.
        for text in ["", "not a key", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"] {
            let err = dkim_signing_key(text, DkimAlgorithm::Auto).err().unwrap().to_string();
            assert!(err.contains("not a supported key") && !err.contains("AAAA"), "{err}");
        }
        // An ECDSA PKCS#8 key is neither Ed25519 nor RSA.
        let ecdsa = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = dkim_signing_key(&ecdsa, DkimAlgorithm::Auto).err().unwrap().to_string();
        assert!(err.contains("neither Ed25519 nor RSA"), "{err}");
    }

    #[tokio::test]
    async fn plain_smtp_only_on_this_machine() {
        let settings = |host: &str| SmtpSettings {
            host: host.to_owned(),
            port: 25,
            security: SmtpSecurity::None,
            credentials: None,
            from: "security@shop.example".into(),
            dkim: None,
        };
        assert!(SmtpMailer::new(&settings("127.0.0.1")).is_ok());
        assert!(SmtpMailer::new(&settings("mail.example.com")).is_err());
    }
}
