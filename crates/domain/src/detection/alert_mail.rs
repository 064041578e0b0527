//! Security alerts by mail: a detection at or above the incident severity, and an incident
//! opened, are mailed to the shop's staff members holding the `security` role and to the
//! deployment's `detection.alert_emails`, written into the outbox in the incident's own
//! transaction (so none is lost, and none is sent for a change that did not commit).
//! Detection mails are bounded per shop and hour ([`AlertMailSettings::per_hour`], counted in
//! the shared store, so every node together stays within it); the mail that reaches the bound
//! says so. An incident opened is always mailed: a shop has at most one active incident, and a
//! new one opens only after its staff resolved the last, so openings cannot flood.
//! Must never: put a card number, a password or a token's value in a mail (summaries are
//! masked and hold ids, codes and addresses only), or mail staff of another shop.

use std::sync::Arc;

use strongroom_types::Clock;

use crate::DomainError;
use crate::merchants::MerchantId;
use crate::outbox::{Outbox, OutboxMessage};
use crate::ports::detection::DetectionCounts;
use crate::staff::StaffService;

/// Settings of alert mails (`[detection]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMailSettings {
    /// Addresses that get every alert mail of every shop, besides each shop's security staff.
    pub alert_emails: Vec<String>,
    /// Detection mails per shop (and for the deployment-wide detections) per hour; 0: none
    /// (incidents opened are still mailed).
    pub per_hour: u32,
}

impl Default for AlertMailSettings {
    fn default() -> Self {
        Self { alert_emails: Vec::new(), per_hour: 20 }
    }
}

/// Who gets an alert, decided before the incident's transaction.
#[derive(Debug, Clone, Default)]
pub struct Recipients {
    to: Vec<String>,
    /// This mail is the last one of the hour's allowance.
    last_of_the_hour: bool,
    /// The hour's allowance is spent: detections are not mailed (an opening still is).
    spent: bool,
}

/// Writes alert mails.
#[derive(Clone)]
pub struct AlertMail {
    staff: Arc<StaffService>,
    counts: Arc<dyn DetectionCounts>,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    settings: AlertMailSettings,
}

impl std::fmt::Debug for AlertMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertMail").field("per_hour", &self.settings.per_hour).finish_non_exhaustive()
    }
}

const HOUR_MS: i64 = 3_600_000;

impl AlertMail {
    /// The writer.
    pub fn new(
        staff: Arc<StaffService>,
        counts: Arc<dyn DetectionCounts>,
        outbox: Outbox,
        clock: Arc<dyn Clock>,
        settings: AlertMailSettings,
    ) -> Self {
        Self { staff, counts, outbox, clock, settings }
    }

    /// Who gets the mail of a detection for `merchant` (`None`: deployment-wide, only
    /// `alert_emails`), counting it against the hour's allowance.
    pub async fn recipients(&self, merchant: Option<&MerchantId>) -> Result<Recipients, DomainError> {
        let mut to = self.settings.alert_emails.clone();
        if let Some(merchant) = merchant {
            to.extend(self.staff.security_emails(merchant).await?);
        }
        to.sort();
        to.dedup();
        if to.is_empty() {
            return Ok(Recipients::default());
        }
        let now = self.clock.now().unix_millis();
        let window_start = now - now.rem_euclid(HOUR_MS);
        let counter = format!("alert_mail:{}", merchant.map_or("", MerchantId::as_str));
        let hits = match self.counts.observe(&counter, window_start, None, window_start.saturating_add(HOUR_MS)).await {
            Ok(tally) => tally.hits,
            Err(err) => {
                // Unable to count: mail (an alert lost is worse than one more mail).
                tracing::warn!(error = %err, "counting an alert mail failed");
                0
            }
        };
        let bound = u64::from(self.settings.per_hour);
        Ok(Recipients { to, last_of_the_hour: hits == bound, spent: hits > bound })
    }

    /// The outbox messages of one alert: `subject` (no detail in it) and `lines`, to each
    /// recipient; `opening`: an incident opened (mailed even when the allowance is spent).
    pub fn messages(
        &self,
        merchant: Option<&MerchantId>,
        recipients: &Recipients,
        opening: bool,
        subject: &str,
        mut lines: Vec<String>,
    ) -> Vec<OutboxMessage> {
        if recipients.spent && !opening {
            return Vec::new();
        }
        if recipients.last_of_the_hour && !opening {
            lines.push(format!(
                "This is security alert mail number {} this hour, the last one: further detections this hour are \
                 not mailed. They are on the incident's timeline, in the audit log and sent to your webhooks.",
                self.settings.per_hour
            ));
        }
        lines.push(
            "See the incident and its timeline at /v1/security/incidents, and the decisions at \
             /v1/security/decisions."
                .to_owned(),
        );
        recipients
            .to
            .iter()
            .filter_map(|to| {
                let mail = self.staff.render_alert(to.clone(), subject, &lines);
                match self.outbox.mail_message(merchant, &mail) {
                    Ok(message) => Some(message),
                    Err(err) => {
                        tracing::warn!(error = %err, "an alert mail could not be written");
                        None
                    }
                }
            })
            .collect()
    }
}
