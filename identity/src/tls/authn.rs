//! The gRPC side of authentication: the identity verified in the handshake becomes a request
//! extension every service reads with [`caller`].

use faultline_core::Identity;
use tonic::{Request, Status};

use super::PeerInfo;

/// Interceptor for every service: puts the caller's [`Identity`] (verified during the TLS
/// handshake by [`super::TlsIncoming`]) in the request's extensions. A request on a connection
/// that did not come from [`super::TlsIncoming`] carries no identity and is refused with
/// `UNAUTHENTICATED`.
#[allow(clippy::result_large_err)]
pub fn authenticate(mut req: Request<()>) -> Result<Request<()>, Status> {
    let identity = req
        .extensions()
        .get::<PeerInfo>()
        .map(|peer| peer.identity.clone())
        .ok_or_else(|| {
            Status::unauthenticated(
                "connection carries no verified client certificate (it did not come through the mutual-TLS listener)",
            )
        })?;
    req.extensions_mut().insert(identity);
    Ok(req)
}

/// The authenticated caller of a request that passed [`authenticate`].
#[allow(clippy::result_large_err)]
pub fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_core::Role;

    #[test]
    fn identity_travels_from_the_connection_to_the_request() {
        let mut req = Request::new(());
        req.extensions_mut().insert(PeerInfo {
            remote: "127.0.0.1:5000".parse().expect("addr"),
            identity: Identity::new(Role::Viewer, "alice"),
        });
        let req = authenticate(req).expect("authenticated");
        assert_eq!(
            caller(&req).expect("caller"),
            Identity::new(Role::Viewer, "alice")
        );
        let err = authenticate(Request::new(())).expect_err("no peer info");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(caller(&Request::new(())).is_err());
    }
}
