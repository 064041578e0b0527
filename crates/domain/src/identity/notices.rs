//! Mails to customers: the address check, the password-reset link, a warning when someone tries
//! to register with a taken address, security notices (a sign-in from a new device, a
//! password, second-factor or phrase change, a recovery code used), and payment receipts. Every mail shows the
//! customer's anti-phishing phrase when they have set one, and says what to do if it was not them.
//! Must never: put a value in a mail that was not escaped for its part, a secret other than the
//! one single-use link the mail exists for, or anything in a subject but the shop's name and the
//! kind of mail.

use strongroom_types::Secret;

use super::IdentityService;
use crate::DomainError;
use crate::mail::{Mail, escape_html};
use crate::ports::CustomerRecord;

/// A mail before rendering.
#[derive(Debug)]
pub(super) struct Notice {
    pub kind: &'static str,
    pub subject: &'static str,
    pub intro: &'static str,
    pub facts: Vec<(&'static str, String)>,
    pub link: Option<(&'static str, Secret<String>)>,
    pub closing: &'static str,
}

const NOT_YOU: &str =
    "If this was not you, change your password now and end your other sessions in your account's security centre.";

impl Notice {
    pub fn new_device(agent: &str, ip: &str, when: &str) -> Self {
        Self {
            kind: "new_device_sign_in",
            subject: "New sign-in to your account",
            intro: "Your account was just signed in to from a device it has not been used on before.",
            facts: vec![("Device", agent.to_owned()), ("Address", ip.to_owned()), ("Time (UTC)", when.to_owned())],
            link: None,
            closing: NOT_YOU,
        }
    }

    pub fn changed(kind: &'static str, what: &'static str, when: &str) -> Self {
        Self {
            kind,
            subject: "A security setting of your account changed",
            intro: what,
            facts: vec![("Time (UTC)", when.to_owned())],
            link: None,
            closing: NOT_YOU,
        }
    }
}

/// What a payment receipt says: the amount, the payment's id, the card (brand and last four
/// digits only) and when.
#[derive(Debug, Clone)]
pub struct PaymentReceipt {
    /// `19.99 EUR`.
    pub amount: String,
    /// `pi_…`
    pub payment: String,
    /// `visa •••• 4242`.
    pub card: String,
    /// RFC 3339, UTC.
    pub when: String,
}

impl Notice {
    fn receipt(receipt: &PaymentReceipt) -> Self {
        Self {
            kind: "payment_receipt",
            subject: "Your payment",
            intro: "Your payment was received. This is your receipt.",
            facts: vec![
                ("Amount", receipt.amount.clone()),
                ("Payment", receipt.payment.clone()),
                ("Card", receipt.card.clone()),
                ("Time (UTC)", receipt.when.clone()),
            ],
            link: None,
            closing: "If you did not make this payment, contact the shop and change your password.",
        }
    }
}

fn render(notice: &Notice, issuer: &str, phrase: Option<&str>) -> (String, String) {
    let mut text = String::new();
    let mut html = String::from("<!doctype html><html><body style=\"font-family:sans-serif\">");
    if let Some(phrase) = phrase {
        text.push_str(&format!(
            "Your security phrase: {phrase}\n(If this phrase is missing or wrong, this mail is not from us.)\n\n"
        ));
        html.push_str(&format!(
            "<p style=\"border:1px solid #888;padding:8px\">Your security phrase: <strong>{}</strong><br>If this phrase is missing or wrong, this mail is not from us.</p>",
            escape_html(phrase)
        ));
    }
    text.push_str(notice.intro);
    text.push_str("\n\n");
    html.push_str(&format!("<p>{}</p>", escape_html(notice.intro)));
    if !notice.facts.is_empty() {
        html.push_str("<table>");
        for (label, value) in &notice.facts {
            text.push_str(&format!("{label}: {value}\n"));
            html.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape_html(label),
                escape_html(value)
            ));
        }
        html.push_str("</table>");
        text.push('\n');
    }
    if let Some((label, url)) = &notice.link {
        text.push_str(&format!("{label}:\n{}\n\n", url.expose()));
        html.push_str(&format!("<p><a href=\"{}\">{}</a></p>", escape_html(url.expose()), escape_html(label)));
    }
    text.push_str(notice.closing);
    text.push_str(&format!("\n\n{issuer}\n"));
    html.push_str(&format!("<p>{}</p><p>{}</p></body></html>", escape_html(notice.closing), escape_html(issuer)));
    (text, html)
}

impl IdentityService {
    /// Mails a payment receipt to a customer of `space`, with their phrase (an unknown or erased
    /// customer gets none).
    pub async fn send_payment_receipt(
        &self,
        space: crate::modes::Space<'_>,
        customer: &str,
        receipt: &PaymentReceipt,
    ) -> Result<(), DomainError> {
        let Some(record) = self.repo.customer(space.merchant, space.mode, customer).await? else { return Ok(()) };
        self.notify(&record, Notice::receipt(receipt)).await
    }

    /// Renders and queues a mail to `to` (no postman configured: dropped, with a log line).
    pub(super) async fn send_to(&self, to: &str, notice: &Notice, phrase: Option<&str>) -> Result<(), DomainError> {
        let Some(postman) = &self.postman else {
            tracing::warn!(kind = notice.kind, "no mailer configured: mail not sent");
            return Ok(());
        };
        let (text, html) = render(notice, &self.settings.totp_issuer, phrase);
        postman
            .post(Mail {
                to: Secret::new(to.to_owned()),
                subject: format!("{}: {}", self.settings.totp_issuer, notice.subject),
                text: Secret::new(text),
                html: Secret::new(html),
                kind: notice.kind.to_owned(),
            })
            .await
    }

    /// Queues a notice to a customer, with their phrase. Failures to read the address (the
    /// customer's data was erased) are logged, never raised; failing to queue it durably is raised.
    pub(super) async fn notify(&self, customer: &CustomerRecord, notice: Notice) -> Result<(), DomainError> {
        let merchant = &customer.merchant_id;
        let email =
            match self.open_for(merchant, &customer.id, "email", &customer.data_key_id, &customer.email_sealed).await {
                Ok(email) => String::from_utf8_lossy(email.expose()).into_owned(),
                Err(err) => {
                    tracing::warn!(kind = notice.kind, error = %err, "notice not sent: the address cannot be read");
                    return Ok(());
                }
            };
        let phrase = match &customer.phrase_sealed {
            Some(sealed) => self
                .open_for(merchant, &customer.id, "phrase", &customer.data_key_id, sealed)
                .await
                .ok()
                .map(|p| String::from_utf8_lossy(p.expose()).into_owned()),
            None => None,
        };
        self.send_to(&email, &notice, phrase.as_deref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_interpolated_is_escaped_in_html() {
        let notice = Notice::new_device("<script>alert(1)</script>", "203.0.113.9", "2026-11-25T10:00:00Z");
        let (text, html) = render(&notice, "Shop & <Co>", Some("blue \"whale\""));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("Shop &amp; &lt;Co&gt;"));
        assert!(html.contains("blue &quot;whale&quot;"));
        assert!(text.starts_with("Your security phrase: blue \"whale\""));
    }
}
