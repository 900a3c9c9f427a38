//! The HTTPS client that talks to the CA: trusts the configured bundle, and gives up in time.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{chain, AcmeError};

/// A CA that has not answered a request in this long is taken to be down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Inner = Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The HTTP client handed to instant-acme.
#[derive(Clone)]
pub(crate) struct AcmeHttp {
    inner: Inner,
}

/// Reads a PEM bundle of CA certificates.
pub(crate) fn load_ca_bundle(path: &Path) -> Result<RootCertStore, AcmeError> {
    let bundle_error = |detail: String| AcmeError::CaBundle {
        path: path.display().to_string(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|e| bundle_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bundle_error(format!("not a PEM bundle: {e}")))?;
    if certs.is_empty() {
        return Err(bundle_error("holds no CERTIFICATE block".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bundle_error(format!("a certificate in it is not usable: {e}")))?;
    }
    Ok(roots)
}

impl AcmeHttp {
    /// Trusts `roots` when given, otherwise the system's roots.
    pub(crate) fn new(roots: Option<&RootCertStore>) -> Result<Self, AcmeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.enforce_http(false);
        let builder = match roots {
            Some(roots) => HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| AcmeError::Directory {
                        url: String::new(),
                        detail: format!("TLS setup failed: {e}"),
                    })?
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth(),
            ),
            None => HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider)
                .map_err(|e| AcmeError::CaBundle {
                    path: "(system roots)".into(),
                    detail: e.to_string(),
                })?,
        };
        let https = builder
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        Ok(Self {
            inner: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// Fetches the directory once to say precisely what is wrong with a bad directory URL,
    /// before instant-acme (which reads it again) reports a bare JSON or transport error.
    /// Returns whether the CA offers ACME Renewal Information.
    pub(crate) async fn check_directory(&self, url: &str) -> Result<bool, AcmeError> {
        let directory_error = |detail: String| AcmeError::Directory {
            url: url.to_owned(),
            detail,
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .body(BodyWrapper::default())
            .map_err(|e| directory_error(e.to_string()))?;
        let mut response = HttpClient::request(self, request)
            .await
            .map_err(|e| directory_error(format!("no answer: {}", chain(&e))))?;
        let status = response.parts.status;
        let body = response
            .body
            .into_bytes()
            .await
            .map_err(|e| directory_error(format!("reading the answer failed: {e}")))?;
        if status != StatusCode::OK {
            return Err(directory_error(format!(
                "answered HTTP {status}, not a directory; check acme.directory"
            )));
        }
        let document: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            directory_error("did not answer with JSON; check acme.directory".to_owned())
        })?;
        for key in ["newNonce", "newAccount", "newOrder"] {
            if document.get(key).and_then(|v| v.as_str()).is_none() {
                return Err(directory_error(format!(
                    "the document has no {key} URL, so it is not an ACME directory; \
                     check acme.directory"
                )));
            }
        }
        Ok(document.get("renewalInfo").is_some())
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let uri = req.uri().to_string();
        let fut = HttpClient::request(&self.inner, req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(result) => result,
                Err(_) => Err(instant_acme::Error::Other(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{uri} did not answer within {}s", REQUEST_TIMEOUT.as_secs()),
                )))),
            }
        })
    }
}
