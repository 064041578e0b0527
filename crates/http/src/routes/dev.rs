//! Development only: `/dev/mailbox` lists the mails the development mailer wrote into the data
//! directory (there when no SMTP server is configured), newest first, so that a developer can
//! follow verification and reset links without a mail server.
//! Must never: exist when SMTP is configured, or answer a client that is not on this machine.

use axum::extract::State;
use axum::response::Html;
use http::StatusCode;
use strongroom_domain::mail::escape_html;

use crate::problem::ApiError;
use crate::state::AppState;

/// Mails shown at most.
const SHOWN: usize = 50;

/// `GET /dev/mailbox`
pub async fn mailbox(State(state): State<AppState>, request: axum::extract::Request) -> Result<Html<String>, ApiError> {
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    let Some(dir) = state.settings.dev_mailbox.clone() else { return Err(ApiError::not_found()) };
    // The socket's own peer, not the address forwarded by a proxy: a proxy on this machine would
    // make every client look local.
    if !peer.is_some_and(|p| p.0.ip().is_loopback()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden")
            .detail("the development mailbox answers this machine only"));
    }
    let mails = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(String, String)>> {
        let mut names: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        names.truncate(SHOWN);
        names
            .into_iter()
            .map(|n| Ok((n.clone(), String::from_utf8_lossy(&std::fs::read(dir.join(&n))?).into_owned())))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Development mailbox</title></head><body><h1>Development mailbox</h1>\
         <p>Mails strongroom would have sent. Configure <code>[mail]</code> with an SMTP server to send them.</p>",
    );
    for (name, text) in mails {
        page.push_str(&format!("<h2>{}</h2><pre>{}</pre>", escape_html(&name), escape_html(&text)));
    }
    page.push_str("</body></html>");
    Ok(Html(page))
}
