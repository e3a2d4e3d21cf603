//! The S3 client's HTTP client: the SDK's default (hyper, rustls on aws-lc, the
//! environment's proxy settings), except that TLS with the system's root certificates is
//! set up at the first `https` request instead of when the client is built.
//!
//! Setting it up reads and parses every certificate under `/etc/ssl/certs` (about 5 ms of
//! CPU on a small VM, a third of what `s3lead run -- true` spends), which a store reached
//! over plain `http` (LocalStack, a MinIO or RGW inside the cluster) never uses. Requests
//! to an `http` URL go through a connector whose trust store is empty: it can speak TLS,
//! but trusts no one, and it is never asked to.

use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;

/// The client to give the SDK's config loader (credential providers use it too).
pub fn lazy_tls() -> SharedHttpClient {
    SharedHttpClient::new(LazyTls {
        plain: client(false),
        tls: client(true),
    })
}

/// The SDK's default client, with the system's roots or with none. Either builds its
/// connector when the SDK first asks for one (and keeps it per settings).
fn client(native_roots: bool) -> SharedHttpClient {
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut conn = ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(
                TlsContext::builder()
                    .with_trust_store(TrustStore::default().with_native_roots(native_roots))
                    .build()
                    .unwrap_or_default(),
            );
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

#[derive(Debug)]
struct LazyTls {
    plain: SharedHttpClient,
    tls: SharedHttpClient,
}

impl HttpClient for LazyTls {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ByScheme {
            plain: self.plain.http_connector(settings, components),
            tls: self.tls.clone(),
            settings: settings.clone(),
            components: components.clone(),
        })
    }
}

/// Sends `https` requests through the client with the system's roots, asking it for its
/// connector (built once, then kept by that client) only then.
#[derive(Debug)]
struct ByScheme {
    plain: SharedHttpConnector,
    tls: SharedHttpClient,
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
}

impl HttpConnector for ByScheme {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if request.uri().starts_with("http://") {
            self.plain.call(request)
        } else {
            self.tls
                .http_connector(&self.settings, &self.components)
                .call(request)
        }
    }
}
