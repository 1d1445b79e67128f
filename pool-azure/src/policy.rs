//! The store's own step in the SDK's HTTP pipeline: it counts every request sent and adds
//! the SAS token, when the store authenticates with one, to the request's query.
//!
//! It runs once per try, after the SDK's (disabled) retry step and before its logging
//! step; the logging step redacts query parameters it does not know, `sig` included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};

use crate::sas::AccountSasSigner;

/// Where a request's SAS comes from.
#[derive(Debug)]
pub(crate) enum SasSource {
    /// No SAS: the request is anonymous or carries a bearer token.
    None,
    /// A token given by the user, as query parameters.
    Fixed(Vec<(String, String)>),
    /// Tokens signed from the account key.
    Signed(AccountSasSigner),
}

/// Counts requests and adds the SAS.
pub(crate) struct RequestPolicy {
    sas: SasSource,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for RequestPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.sas {
            SasSource::None => "none",
            SasSource::Fixed(_) => "fixed",
            SasSource::Signed(_) => "signed",
        };
        f.debug_struct("RequestPolicy")
            .field("sas", &kind)
            .finish_non_exhaustive()
    }
}

impl RequestPolicy {
    /// A policy adding `sas` and counting into `requests`.
    pub(crate) fn new(sas: SasSource, requests: Arc<AtomicU64>) -> Self {
        Self { sas, requests }
    }
}

#[async_trait]
impl Policy for RequestPolicy {
    #[allow(
        elided_lifetimes_in_paths,
        reason = "the signature must match the SDK's trait"
    )]
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        match &self.sas {
            SasSource::None => {}
            SasSource::Fixed(pairs) => set_query(request, pairs),
            SasSource::Signed(signer) => set_query(request, &signer.token()?),
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "the HTTP pipeline has no transport",
            )),
        }
    }
}

/// Sets the SAS parameters on the request URL, replacing any left from an earlier try.
fn set_query(request: &mut Request, pairs: &[(String, String)]) {
    let url = request.url_mut();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !pairs.iter().any(|(p, _)| p == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut query = url.query_pairs_mut();
    query.clear();
    query.extend_pairs(kept);
    query.extend_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

/// Splits a SAS query string into decoded parameters.
pub(crate) fn parse_sas(sas: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};

    #[test]
    fn sas_parameters_replace_stale_ones_and_keep_the_rest() {
        let url = Url::parse("http://h/c/b?comp=block&sig=old").unwrap();
        let mut request = Request::new(url, Method::Put);
        let pairs = parse_sas("?sv=2022-11-02&sig=a%2Bb%2Fc%3D");
        assert_eq!(pairs[1], ("sig".to_owned(), "a+b/c=".to_owned()));
        set_query(&mut request, &pairs);
        assert_eq!(
            request.url().query(),
            Some("comp=block&sv=2022-11-02&sig=a%2Bb%2Fc%3D")
        );
    }
}
