//! Parsing `azure://ACCOUNT/CONTAINER[/PREFIX]` and the options beside it.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use pool_azure::{
    AzureConfig, AzureStore, ConfigError, Credential, EMULATOR_ACCOUNT, EMULATOR_ENDPOINT,
};
use pool_core::ProjectId;
use pool_storage::MetadataStore;

#[test]
fn account_container_and_prefix_come_from_the_url() {
    let c = AzureConfig::from_url("azure://myaccount/pools/team-a/prod/").unwrap();
    assert_eq!(
        (c.account(), c.container(), c.prefix()),
        ("myaccount", "pools", "team-a/prod")
    );
    assert_eq!(c.to_string(), "azure://myaccount/pools/team-a/prod");
    assert_eq!(
        c.container_url().as_str(),
        "https://myaccount.blob.core.windows.net/pools"
    );
    assert_eq!(c.credential().kind(), "entra", "Entra ID is the default");

    let c = AzureConfig::from_url("AZURE://myaccount/pools").unwrap();
    assert_eq!((c.container(), c.prefix()), ("pools", ""));
    assert_eq!(c.to_string(), "azure://myaccount/pools");
}

/// The variant's name, to compare errors without their fields.
fn variant(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::NotAStoreUrl => "NotAStoreUrl",
        ConfigError::WrongScheme { .. } => "WrongScheme",
        ConfigError::UnexpectedUrlParts => "UnexpectedUrlParts",
        ConfigError::InvalidAccount { .. } => "InvalidAccount",
        ConfigError::InvalidContainer { .. } => "InvalidContainer",
        ConfigError::InvalidPrefix { .. } => "InvalidPrefix",
        _ => "other",
    }
}

#[test]
fn malformed_urls_are_refused_with_a_typed_error() {
    let cases = [
        ("myaccount/pools", "NotAStoreUrl"),
        ("s3://myaccount/pools", "WrongScheme"),
        ("azure://myaccount", "InvalidContainer"),
        ("azure://MyAccount/pools", "InvalidAccount"),
        ("azure://myaccount/Pools", "InvalidContainer"),
        ("azure://myaccount/pools/a//b", "InvalidPrefix"),
        ("azure://myaccount/pools/../x", "InvalidPrefix"),
        ("azure://myaccount/pools?sig=abc", "UnexpectedUrlParts"),
        ("azure://user@myaccount/pools", "UnexpectedUrlParts"),
    ];
    for (url, expected) in cases {
        let err = AzureConfig::from_url(url).expect_err(url);
        assert_eq!(variant(&err), expected, "{url}: {err}");
    }
    let err = AzureConfig::from_url("azure://myaccount/pools?sig=abc").unwrap_err();
    assert!(!err.to_string().contains("abc"), "{err}");
}

#[test]
fn endpoint_and_credential_options_are_checked() {
    let c = AzureConfig::from_url("azure://myaccount/pools").unwrap();
    assert!(matches!(
        c.clone().with_endpoint("ftp://host/x").unwrap_err(),
        ConfigError::InvalidEndpoint { .. }
    ));
    assert!(matches!(
        c.clone().with_endpoint("http://host/x?sig=1").unwrap_err(),
        ConfigError::InvalidEndpoint { .. }
    ));
    assert_eq!(
        c.clone().with_account_key("not base64!").unwrap_err(),
        ConfigError::InvalidAccountKey
    );
    assert_eq!(
        c.clone().with_sas("sv=2022-11-02&se=x").unwrap_err(),
        ConfigError::InvalidSas
    );
    assert!(matches!(
        c.clone()
            .with_sas_lifetime(Duration::from_secs(10))
            .unwrap_err(),
        ConfigError::SasLifetimeTooShort { .. }
    ));
    let c = c
        .with_endpoint("http://127.0.0.1:9/myaccount")
        .unwrap()
        .with_sas("?sig=x")
        .unwrap();
    assert_eq!(c.credential().kind(), "sas");
    assert_eq!(
        c.container_url().as_str(),
        "http://127.0.0.1:9/myaccount/pools"
    );
}

#[test]
fn the_emulator_shortcut_uses_azurite_defaults() {
    let c = AzureConfig::from_url("azure://devstoreaccount1/pools")
        .unwrap()
        .with_emulator(None)
        .unwrap();
    assert_eq!(c.endpoint().as_str(), EMULATOR_ENDPOINT);
    assert!(matches!(c.credential(), Credential::AccountKey(_)));
    let c = AzureConfig::emulator("http://127.0.0.1:41234/devstoreaccount1", "pooltest-1").unwrap();
    assert_eq!(c.account(), EMULATOR_ACCOUNT);
    assert_eq!(
        c.container_url().as_str(),
        "http://127.0.0.1:41234/devstoreaccount1/pooltest-1"
    );
}

#[derive(Debug)]
struct NeverAsked;

#[async_trait::async_trait]
impl TokenCredential for NeverAsked {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        panic!("no token is requested while opening a store")
    }
}

#[test]
fn token_credentials_are_only_sent_over_https() {
    let base = AzureConfig::from_url("azure://myaccount/pools/p").unwrap();
    let plain = base
        .clone()
        .with_endpoint("http://127.0.0.1:9/myaccount")
        .unwrap();
    let err = AzureStore::new(plain.with_token_credential(Arc::new(NeverAsked))).unwrap_err();
    assert!(
        matches!(err, ConfigError::TokenNeedsHttps { .. }),
        "{err:?}"
    );
    let store = AzureStore::new(base.with_token_credential(Arc::new(NeverAsked))).unwrap();
    assert_eq!(store.pool_blob(), "p/project_pool.json");
    let id = ProjectId::new("horizon-617-9ca82").unwrap();
    assert_eq!(
        store.metadata_blob(&id),
        "p/horizon-617-9ca82/project_metadata.json"
    );
    assert_eq!(
        store.metadata_location(&id),
        "azure://myaccount/pools/p/horizon-617-9ca82/project_metadata.json"
    );
}
