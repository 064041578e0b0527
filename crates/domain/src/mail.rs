//! Mail: the [`Mailer`] port (SMTP or the development mailbox, in `connectors`) and the
//! [`Postman`], which writes each mail into the outbox (sealed) before the request that sends it
//! answers; the job runner's leader delivers it with retries (see [`crate::outbox`]).
//! Must never: log a recipient address, a subject or a body (bodies carry single-use links);
//! acknowledge a mail that is not durably queued.

use async_trait::async_trait;
use strongroom_types::Secret;

/// One message: the recipient, a subject, a plain-text part and an HTML part (both already
/// escaped by their templates).
#[derive(Clone)]
pub struct Mail {
    /// The recipient's address.
    pub to: Secret<String>,
    /// The subject (no personal data).
    pub subject: String,
    /// The plain-text part.
    pub text: Secret<String>,
    /// The HTML part.
    pub html: Secret<String>,
    /// A stable name of the template, for logs and metrics, e.g. `verify_email`.
    pub kind: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth retrying (connection refused, 4xx).
    #[error("temporary mail failure: {0}")]
    Temporary(String),
    /// Not worth retrying (bad address, 5xx).
    #[error("permanent mail failure: {0}")]
    Permanent(String),
}

/// Sends one message now.
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Delivers the message or says why not.
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;
}

/// Queues mail durably in the outbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Postman {
    outbox: crate::outbox::Outbox,
}

impl Postman {
    /// A postman writing into `outbox`.
    pub fn new(outbox: crate::outbox::Outbox) -> Self {
        Self { outbox }
    }

    /// The outbox it writes into (to write mail with the change that causes it).
    pub fn outbox(&self) -> &crate::outbox::Outbox {
        &self.outbox
    }

    /// Queues a mail; returns once it is durably written (not sent).
    pub async fn post(&self, mail: Mail) -> Result<(), crate::DomainError> {
        self.outbox.mail(None, &mail).await
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_html;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html("<a href=\"x\">'&'</a>\u{7}"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
