//! Mailers: SMTP through lettre (STARTTLS or implicit TLS required unless the server is on this
//! machine, DKIM signing when a key is configured), and the development mailbox, which writes
//! each message as an `.eml` file into the data directory instead of sending it.
//! Must never: send a message without TLS to a server that is not on the loopback interface, log
//! an address, a subject or a body, or build a header from unchecked text (addresses are parsed
//! as mailboxes, which refuses line breaks; subjects are encoded by lettre).

use std::path::PathBuf;

use async_trait::async_trait;
use lettre::message::dkim::{DkimConfig, DkimSigningAlgorithm, DkimSigningKey};
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
    /// DKIM: signing domain, selector and the RSA private key (PKCS#1 or PKCS#8 PEM).
    pub dkim: Option<(String, String, Secret<String>)>,
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
            Some((domain, selector, pem)) => {
                let key = DkimSigningKey::new(pem.expose(), DkimSigningAlgorithm::Rsa)
                    .map_err(|e| anyhow::anyhow!("mail.dkim_private_key_file is not an RSA private key: {e}"))?;
                Some(dkim_config(selector, domain, key))
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
