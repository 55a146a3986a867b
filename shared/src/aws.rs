//! The AWS SDK configuration the functions share: the SDK's own HTTPS client (hyper,
//! rustls on aws-lc), set up so that loading the platform's root certificates waits for
//! the first AWS request instead of delaying every cold start.

use aws_config::SdkConfig;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;
use std::time::Duration;

/// The SDK's default client reads every root certificate of the platform when a service
/// client is *built* (its `validate_base_client_config` does it on purpose): about 150
/// files on Debian, and most of each function's init time, for clients that the payment
/// API and the notifier may not use in an invocation at all. This client is the same one
/// (same connector, TLS provider and proxy settings as the SDK's default) without that
/// hook: its connector, and the certificates with it, are made on the first request.
#[derive(Debug, Clone)]
struct CertificatesOnFirstUse(SharedHttpClient);

impl HttpClient for CertificatesOnFirstUse {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

fn https_client() -> SharedHttpClient {
    let client = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        // As the SDK's default does from behaviour version 2025-08-07: HTTPS_PROXY & co.
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    CertificatesOnFirstUse(client).into_shared()
}

/// An AWS API endpoint for every client (an emulator's); unset or empty: AWS's own.
pub const AWS_ENDPOINT_VAR: &str = crate::config::vars::AWS_ENDPOINT_URL;

/// Loads the SDK configuration from the environment (region, credentials, and
/// `AWS_ENDPOINT_URL` or `SETTLE_AWS_ENDPOINT_URL` for the local emulator). With `timeout`,
/// connecting is bounded by it and each attempt by twice it.
pub async fn load_sdk_config(timeout: Option<Duration>) -> SdkConfig {
    crate::tls::install_crypto_provider();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https_client());
    // Lambda hands every function its credentials and region in the environment. The
    // default chains would find them there first too, but are built whole before that (an
    // STS client for web identity, profile files read) at every cold start.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some() {
        loader = loader.credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new());
    }
    if let Ok(region) = std::env::var("AWS_REGION") {
        loader = loader.region(aws_config::Region::new(region));
    }
    // Settle's own name for an emulator's endpoint, which the template can declare empty:
    // `sam local invoke --env-vars` only sets variables the template declares, and an
    // empty `AWS_ENDPOINT_URL` would be an invalid URL to the SDK, warned about at every
    // cold start in AWS.
    if let Some(url) = std::env::var(AWS_ENDPOINT_VAR).ok().filter(|url| !url.trim().is_empty()) {
        loader = loader.endpoint_url(url.trim());
    }
    if let Some(timeout) = timeout {
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout * 2)
                .build(),
        );
    }
    loader.load().await
}
