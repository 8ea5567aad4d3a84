//! The SPIFFE Workload API over the node's state.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use writ_core::api::JwtSvidRequest;

use crate::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use crate::state::State;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const SECURITY_HEADER: &str = "workload.spiffe.io";

pub struct WorkloadApi {
    state: Arc<State>,
}

impl WorkloadApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The caller, as attested when it connected; the request must carry
    /// the Workload API's security header.
    fn caller<T>(&self, req: &Request<T>) -> Result<crate::attestor::Peer, Status> {
        if req
            .metadata()
            .get(SECURITY_HEADER)
            .and_then(|v| v.to_str().ok())
            != Some("true")
        {
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        req.extensions()
            .get::<crate::attestor::Peer>()
            .cloned()
            .ok_or_else(|| Status::permission_denied("the caller cannot be identified"))
    }

    /// The caller and its selectors, checked now: the process that
    /// connected must still be there, running what it ran then.
    fn identify<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(crate::attestor::Peer, Vec<String>), Status> {
        let peer = self.caller(req)?;
        let selectors = attested_now(&peer)?;
        Ok((peer, selectors))
    }
}

/// The peer's selectors as of now (see [`crate::attestor::Peer::selectors`]).
fn attested_now(peer: &crate::attestor::Peer) -> Result<Vec<String>, Status> {
    match peer.selectors() {
        Ok(s) if !s.is_empty() => Ok(s),
        Ok(_) => Err(Status::permission_denied("the caller cannot be identified")),
        Err(e) => {
            tracing::warn!(pid = ?peer.pid(), error = %e, "workload API caller no longer attested");
            Err(Status::permission_denied(e.to_string()))
        }
    }
}

impl WorkloadApi {
    /// A stream of bundles for a caller with some identity here, ending
    /// when it has none any more.
    fn bundles<T, R, F>(&self, req: &Request<R>, make: F) -> Result<Response<Streamed<T>>, Status>
    where
        T: Clone + PartialEq + Send + 'static,
        F: Fn(&State) -> T + Send + 'static,
    {
        let (peer, selectors) = self.identify(req)?;
        if self.state.entries_for(&selectors).is_empty() {
            return Err(no_identity());
        }
        Ok(Response::new(watched(Arc::clone(&self.state), move |s| {
            // Checked again for every message sent.
            if s.entries_for(&attested_now(&peer)?).is_empty() {
                return Err(no_identity());
            }
            Ok(make(s))
        })))
    }
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

fn concat(ders: &[Vec<u8>]) -> Vec<u8> {
    ders.iter().flatten().copied().collect()
}

/// A stream that sends `make()` now and again after every change of the
/// node's state (when the message differs), until it yields an error
/// (sent, then the stream ends) or the caller goes away.
fn watched<T, F>(state: Arc<State>, make: F) -> Streamed<T>
where
    T: Clone + PartialEq + Send + 'static,
    F: Fn(&State) -> Result<T, Status> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut version = state.watch();
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            match make(&state) {
                Ok(msg) if last.as_ref() != Some(&msg) => {
                    if tx.send(Ok(msg.clone())).await.is_err() {
                        return;
                    }
                    last = Some(msg);
                }
                Ok(_) => {}
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
            tokio::select! {
                changed = version.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let (peer, selectors) = self.identify(&req)?;
        if self.state.entries_for(&selectors).is_empty() {
            return Err(no_identity());
        }
        Ok(Response::new(watched(Arc::clone(&self.state), move |s| {
            // Checked again for every message sent.
            let svids = s.svids_for(&attested_now(&peer)?);
            if svids.is_empty() {
                return Err(no_identity());
            }
            let bundle = concat(&s.x509_bundle());
            Ok(X509svidResponse {
                svids: svids
                    .into_iter()
                    .map(|(_, i)| X509svid {
                        spiffe_id: i.spiffe_id,
                        // The SVID alone: the authorities are in `bundle`.
                        x509_svid: i.chain.first().cloned().unwrap_or_default(),
                        x509_svid_key: i.key,
                        bundle: bundle.clone(),
                        hint: String::new(),
                    })
                    .collect(),
                crl: Vec::new(),
                federated_bundles: HashMap::new(),
            })
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.bundles(&req, |s| X509BundlesResponse {
            crl: Vec::new(),
            bundles: HashMap::from([(s.trust_domain(), concat(&s.x509_bundle()))]),
        })
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let (peer, selectors) = self.identify(&req)?;
        let body = req.into_inner();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let entries: Vec<_> = self
            .state
            .entries_for(&selectors)
            .into_iter()
            .filter(|e| body.spiffe_id.is_empty() || e.spiffe_id == body.spiffe_id)
            .collect();
        if entries.is_empty() {
            return Err(no_identity());
        }
        let mut svids = Vec::new();
        for e in entries {
            let issued = self
                .state
                .broker()
                .jwt_svid(&JwtSvidRequest {
                    agent: e.agent.clone(),
                    audience: body.audience.clone(),
                    selectors: e.selectors.clone(),
                })
                .await
                .map_err(|err| match crate::broker::CallError::from(err) {
                    crate::broker::CallError::Forbidden(_)
                    | crate::broker::CallError::Unauthorized => no_identity(),
                    m => Status::unavailable(format!("the broker cannot issue now: {m}")),
                })?;
            svids.push(Jwtsvid {
                spiffe_id: issued.spiffe_id,
                svid: issued.token,
                hint: String::new(),
            });
        }
        // The broker took a while: the caller is checked again before it
        // is answered.
        attested_now(&peer)?;
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.bundles(&req, |s| JwtBundlesResponse {
            bundles: HashMap::from([(s.trust_domain(), s.jwt_bundle())]),
        })
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.identify(&req)?;
        let body = req.into_inner();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let claims = crate::validate::jwt_svid(
            &body.svid,
            &body.audience,
            &self.state.jwt_bundle(),
            &self.state.trust_domain(),
        )
        .map_err(Status::invalid_argument)?;
        let spiffe_id = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(crate::validate::to_struct(&claims)),
        }))
    }
}
