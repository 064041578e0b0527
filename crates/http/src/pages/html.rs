//! Page layout and escaping. Every dynamic value goes through [`esc`]; the pages carry no inline
//! script or style, so the CSP can forbid both.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Escapes text for HTML content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    strongroom_domain::mail::escape_html(text)
}

/// A whole page: `body` is trusted markup built from escaped parts.
pub fn page(status: StatusCode, title: &str, csrf: &str, body: &str) -> Response {
    page_going_on(status, title, csrf, body, None)
}

/// A whole page that, with `then`, sends the browser on to that address at once (a `refresh`
/// meta element: a navigation of its own, so it is not the redirect of a form's submission,
/// which the CSP's `form-action 'self'` would stop at another origin).
pub fn page_going_on(status: StatusCode, title: &str, csrf: &str, body: &str, then: Option<&str>) -> Response {
    let refresh =
        then.map(|to| format!("<meta http-equiv=\"refresh\" content=\"0;url={}\">", esc(to))).unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf-token\" content=\"{csrf}\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/account/assets/account.css\">\
         <script src=\"/account/assets/account.js\" defer></script></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>",
        csrf = esc(csrf),
        title = esc(title),
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(super::PAGE_CSP));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Same-origin requests carry a real `Origin` (with `no-referrer` browsers send `null`).
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // An error page is its own body: the edge must not turn it into problem+json.
    response.extensions_mut().insert(crate::middleware::OwnErrorBody);
    response
}

/// A short error page.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body =
        format!("<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/account/security\">Back</a></p>", esc(message));
    page(status, "Something went wrong", "", &body)
}

/// A form posting to `action` with the CSRF token and `fields` (trusted markup).
pub fn form(action: &str, csrf: &str, fields: &str, button: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{fields}\
         <button type=\"submit\">{}</button></form>",
        esc(action),
        esc(csrf),
        esc(button)
    )
}
