//! A recording payment gateway for the forward proxy's tests: HTTPS on 127.0.0.1 with a
//! certificate for `localhost` from a test CA made here (trusted by strongroom through
//! `outbound.ca_file`), HTTP/1.1 with keep-alive, every request recorded. It answers by path:
//! `/redirect` with a 302 to `/v1/charges`, `/slow` after five seconds, `/big` with a body of
//! 64 KiB, anything else with a 201 whose JSON body echoes the card number it received (as
//! gateways that echo do), a spaced copy of it, and a few headers (one of them unsafe to pass on).
//! Must never: be used outside tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the gateway read it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A running test gateway.
#[derive(Debug)]
pub struct TestGateway {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The PEM of the CA that signed its certificate.
    pub ca_pem: String,
    /// What it received, in order.
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl TestGateway {
    /// Starts a gateway.
    pub async fn start() -> Self {
        let (ca_pem, leaf, key) = test_pki();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)
            .expect("certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve(tls, recorded, port).await;
                    }
                });
            }
        });
        Self { port, ca_pem, received }
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// What it has received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buffer: &mut Vec<u8>) -> Option<Received> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(Received { method, target, headers, body })
}

fn answer(request: &Received, port: u16) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let path = request.target.split('?').next().unwrap_or_default();
    match path {
        "/redirect" => (302, vec![("location".into(), format!("https://localhost:{port}/v1/charges"))], Vec::new()),
        "/big" => (200, vec![("content-type".into(), "text/plain".into())], vec![b'x'; 64 * 1024]),
        _ => {
            let body = String::from_utf8_lossy(&request.body).into_owned();
            // The card number the request carried, if any: 12 to 19 digits in a row.
            let number = body
                .split(|c: char| !c.is_ascii_digit())
                .find(|run| (12..=19).contains(&run.len()))
                .unwrap_or_default()
                .to_owned();
            let spaced: String = number
                .chars()
                .enumerate()
                .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
                .collect();
            let json = serde_json::json!({
                "id": "ch_test_1",
                "status": "succeeded",
                "amount": 4242,
                "payment_method_details": {"card": {"number": number.clone(), "display": spaced}},
            });
            let headers = vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), "req_gateway_1".into()),
                ("set-cookie".into(), "gateway_session=s3cret".into()),
                ("x-card-echo".into(), number),
            ];
            (201, headers, json.to_string().into_bytes())
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, recorded: Arc<Mutex<Vec<Received>>>, port: u16) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        recorded.lock().expect("lock").push(request.clone());
        if request.target.starts_with("/slow") {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let (status, headers, body) = answer(&request, port);
        let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
            return;
        }
        let _ = stream.flush().await;
    }
}

/// A CA and a certificate for `localhost` signed by it: the CA in PEM, the leaf and its key in DER.
fn test_pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "strongroom test gateway CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).expect("leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (ca.pem(), leaf.der().clone(), key)
}
