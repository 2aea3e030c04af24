//! Who is calling: the cluster behind an agent-facing request, and the gate in front of the
//! management services.
//!
//! Agent-facing services take the tenant only from an authenticated identity: an
//! [`AgentIdentity`] that an embedder's own authentication layer put into the request's
//! extensions, or else the verified client certificate the transport's mutual-TLS listener
//! attached ([`PeerIdentity`]). Nothing a client sends can set either.
//!
//! Management calls pass an [`Authenticator`]; the default is [`AdminToken`]: a verified
//! admin client certificate (on a management listener with TLS), or the bearer token compared
//! in constant time from a loopback peer.

use std::sync::Arc;

use opni_metrics_core::ClusterId;
use opni_metrics_transport::grpc::PeerIdentity;
use tonic::{Request, Status};

/// An agent authenticated by the embedder's own layer; put it in the request extensions
/// (`http::Request::extensions_mut`) before the gateway's agent services see the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The agent's cluster, which is its tenant.
    pub cluster: ClusterId,
}

/// The authenticated cluster of an agent-facing request: an [`AgentIdentity`] if present,
/// else the verified client certificate's cluster.
///
/// # Errors
/// `UNAUTHENTICATED` naming what is missing.
pub fn cluster_of<T>(req: &Request<T>) -> Result<ClusterId, Status> {
    if let Some(a) = req.extensions().get::<AgentIdentity>() {
        return Ok(a.cluster.clone());
    }
    PeerIdentity::cluster_of(req)
}

/// The interceptor of the agent-facing services that need an identity (`RemoteWrite`,
/// `NodeSync`): a request without one is refused on its headers, before its message is read,
/// so a stranger cannot make the gateway buffer a message.
///
/// # Errors
/// `UNAUTHENTICATED`.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub(crate) fn require_identity(req: Request<()>) -> Result<Request<()>, Status> {
    cluster_of(&req).map(|_| req)
}

/// Admits or refuses management calls. Runs before the message is handled.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok` admits the call; the `Status` is returned to the caller otherwise.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` or `PERMISSION_DENIED`.
    fn authenticate(&self, request: &Request<()>) -> Result<(), Status>;
}

/// The default management authenticator. It admits:
/// - a client certificate the management listener verified against its admin CA, unless the
///   certificate names a cluster (an agent's certificate is never an admin's, even when one CA
///   signs both);
/// - `authorization: Bearer <token>`, compared in constant time, from a loopback peer (or from
///   a request whose peer address is unknown: services an embedder mounted on its own server,
///   which authenticates connections itself).
#[derive(Clone)]
pub struct AdminToken {
    expected: Arc<str>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A check for `token`.
    pub fn new(token: &str) -> Self {
        Self { expected: Arc::from(format!("Bearer {token}")) }
    }
}

/// The peer address the transport recorded, if any.
pub(crate) fn peer_addr<T>(req: &Request<T>) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<PeerIdentity>()
        .map(|p| p.remote_addr)
        .or_else(|| req.extensions().get::<tonic::transport::server::TcpConnectInfo>().and_then(|i| i.remote_addr()))
}

impl Authenticator for AdminToken {
    fn authenticate(&self, req: &Request<()>) -> Result<(), Status> {
        if let Some(p) = req.extensions().get::<PeerIdentity>() {
            match &p.cluster {
                Err(opni_metrics_transport::tls::IdentityError::NoClusterSan) => return Ok(()),
                Ok(c) => {
                    return Err(Status::permission_denied(format!(
                        "the certificate of cluster {c} is an agent's, not an admin's"
                    )));
                }
                Err(_) => {}
            }
        }
        if let Some(addr) = peer_addr(req)
            && !addr.ip().is_loopback()
        {
            return Err(Status::unauthenticated(
                "the admin bearer token is accepted only from loopback; use an admin client certificate",
            ));
        }
        let given = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let expected = self.expected.as_bytes();
        let ok = given.len() == expected.len()
            && given.bytes().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if ok { Ok(()) } else { Err(Status::unauthenticated("management calls need the admin bearer token")) }
    }
}

/// The interceptor form of an [`Authenticator`], for `XServer::with_interceptor`.
pub(crate) fn interceptor(
    auth: Arc<dyn Authenticator>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req| auth.authenticate(&req).map(|()| req)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn admin_token_admits_only_the_token() {
        let auth = AdminToken::new("s3cret");
        let mut ok = Request::new(());
        ok.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(auth.authenticate(&ok).is_ok());
        let mut wrong = Request::new(());
        wrong.metadata_mut().insert("authorization", "Bearer s3cres".parse().unwrap());
        assert_eq!(auth.authenticate(&wrong).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(auth.authenticate(&Request::new(())).is_err());
    }

    fn from(addr: &str, cluster: Result<ClusterId, opni_metrics_transport::tls::IdentityError>) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut().insert(PeerIdentity {
            cluster,
            remote_addr: addr.parse().unwrap(),
            not_after: None,
            serial: None,
        });
        r
    }

    #[test]
    fn the_token_needs_loopback_and_certificates_need_no_cluster() {
        use opni_metrics_transport::tls::IdentityError;
        let auth = AdminToken::new("s3cret");
        let mut remote = from("10.1.2.3:5000", Err(IdentityError::NoCertificate));
        remote.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(auth.authenticate(&remote).unwrap_err().code(), tonic::Code::Unauthenticated);
        let mut local = from("127.0.0.1:5000", Err(IdentityError::NoCertificate));
        local.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(auth.authenticate(&local).is_ok());
        assert!(auth.authenticate(&from("10.1.2.3:5000", Err(IdentityError::NoClusterSan))).is_ok());
        let agent = from("10.1.2.3:5000", Ok(ClusterId::new("c1").unwrap()));
        assert_eq!(auth.authenticate(&agent).unwrap_err().code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn an_embedders_identity_wins_over_none() {
        let mut req = Request::new(());
        assert_eq!(cluster_of(&req).unwrap_err().code(), tonic::Code::Unauthenticated);
        req.extensions_mut().insert(AgentIdentity { cluster: ClusterId::new("c1").unwrap() });
        assert_eq!(cluster_of(&req).unwrap().as_str(), "c1");
    }
}
