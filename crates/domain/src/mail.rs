//! Mail: the [`Mailer`] port (SMTP or the development mailbox, in `connectors`) and the
//! [`Postman`], a bounded queue with a background sender and retries, so that no request waits
//! for a mail server.
//! Must never: log a recipient address, a subject or a body (bodies carry single-use links);
//! block the request that sends a mail. Delivery is at most once per process: a mail still queued
//! when the process stops is lost (the request that caused it can be repeated).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use strongroom_types::Secret;
use tokio::sync::mpsc;

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
    pub kind: &'static str,
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

/// Queued mail, sent in the background with retries after 1, 5 and 25 seconds.
#[derive(Debug, Clone)]
pub struct Postman {
    queue: mpsc::Sender<Mail>,
}

/// Mails that may wait; more are dropped (and counted in the log).
const QUEUE: usize = 10_000;

impl Postman {
    /// Starts the sender task on the current runtime.
    pub fn start(mailer: Arc<dyn Mailer>) -> Self {
        let (queue, mut inbox) = mpsc::channel::<Mail>(QUEUE);
        tokio::spawn(async move {
            while let Some(mail) = inbox.recv().await {
                let mailer = mailer.clone();
                // Each mail retries on its own, so one slow mail server answer does not hold up the rest.
                tokio::spawn(async move {
                    for (attempt, pause) in [0u64, 1, 5, 25].into_iter().enumerate() {
                        tokio::time::sleep(Duration::from_secs(pause)).await;
                        match mailer.send(&mail).await {
                            Ok(()) => {
                                tracing::info!(kind = mail.kind, attempt, "mail sent");
                                return;
                            }
                            Err(MailError::Permanent(why)) => {
                                tracing::error!(kind = mail.kind, error = %why, "mail refused");
                                return;
                            }
                            Err(MailError::Temporary(why)) => {
                                tracing::warn!(kind = mail.kind, attempt, error = %why, "mail not sent yet");
                            }
                        }
                    }
                    tracing::error!(kind = mail.kind, "mail given up after retries");
                });
            }
        });
        Self { queue }
    }

    /// Queues a mail; returns at once.
    pub fn post(&self, mail: Mail) {
        if let Err(err) = self.queue.try_send(mail) {
            tracing::error!(kind = err.into_inner().kind, "mail queue full: mail dropped");
        }
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
