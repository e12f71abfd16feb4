//! The server: the router (which route leads to which target), the
//! request-id layer, and the listener.
//!
//! Adding a target is one module under `targets/` implementing
//! `pipeline::Target`, and one route here:
//! `.route("/path", post(pipeline::handle::<MyTarget>).with_state(state))`.

pub(crate) mod listener;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post};
use http::HeaderValue;

use crate::gateway::Gateway;
use crate::pipeline::{RequestId, handle, new_request_id};
use crate::targets::admin::{self, AdminTarget, Endpoint};
use crate::targets::documents::{DocumentsGrpc, DocumentsRest};
use crate::targets::{git::GitTarget, signin, tokens, tokens::TokenService, webhooks::Webhooks};

/// Gives every request an id (in its extensions, for the pipeline's
/// records) and every response its `x-request-id`.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = new_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The HTTP routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    let max_body = gw.config.server.max_body_bytes;
    let admin_route = |endpoint: Endpoint| {
        Arc::new(AdminTarget {
            state: gw.admin.clone(),
            endpoint,
        })
    };
    let discovery = Router::new()
        .route("/.well-known/openid-configuration", get(tokens::metadata))
        .route("/.well-known/jwks.json", get(tokens::jwks))
        .route(
            "/dev-idp/.well-known/openid-configuration",
            get(tokens::dev_metadata),
        )
        .route("/dev-idp/jwks.json", get(tokens::dev_jwks))
        // The dev identity provider's sign-in (DEV ONLY; 404 unless enabled).
        .route(
            "/dev-idp/authorize",
            get(tokens::dev_idp::authorize_page).post(tokens::dev_idp::authorize_submit),
        )
        .route("/dev-idp/token", post(tokens::dev_idp::token))
        .route("/dev-idp/revoke", post(tokens::dev_idp::revoke))
        .route("/dev-idp/logout", get(tokens::dev_idp::logout))
        .route("/oauth2/token", post(handle::<TokenService>))
        .with_state(gw.tokens.clone());
    let admin = Router::new()
        .route("/admin/health", get(admin::health))
        .route("/readyz", get(crate::targets::readiness::readyz))
        .with_state(gw.admin.clone())
        // Unauthenticated like `/readyz`; nothing in it is secret.
        .route(
            "/metrics",
            get(crate::metrics::serve).with_state(gw.pipe.metrics.clone()),
        )
        .route(
            "/oauth2/revoke",
            post(handle::<AdminTarget>).with_state(admin_route(Endpoint::TokenRevoke)),
        )
        .route(
            "/oauth2/introspect",
            post(handle::<AdminTarget>).with_state(admin_route(Endpoint::TokenIntrospect)),
        )
        .route(
            "/admin/audit",
            get(handle::<AdminTarget>).with_state(admin_route(Endpoint::AuditQuery)),
        )
        .route(
            "/admin/revocations",
            post(handle::<AdminTarget>)
                .with_state(admin_route(Endpoint::Revoke))
                .merge(delete_route(admin_route(Endpoint::Lift))),
        )
        .route(
            "/admin/keys",
            get(handle::<AdminTarget>).with_state(admin_route(Endpoint::Keys)),
        );
    let signin = Router::new()
        .route("/login", get(signin::login))
        .route("/callback", get(signin::callback))
        .route("/logout", get(signin::logout).post(signin::logout))
        .route("/logout/done", get(signin::logout_done))
        .route("/oauth2/login-providers", get(signin::login_providers))
        .with_state(gw.signin.clone());
    let documents_grpc = Arc::new(DocumentsGrpc(gw.documents.clone()));
    let documents_rest = Arc::new(DocumentsRest(gw.documents.clone()));
    Router::new()
        .merge(discovery)
        .merge(admin)
        .merge(signin)
        .route(
            "/git/{*path}",
            any(handle::<GitTarget>).with_state(gw.git.clone()),
        )
        .route(
            "/google.firestore.v1.Firestore/{method}",
            post(handle::<DocumentsGrpc>).with_state(documents_grpc),
        )
        .route(
            "/v1/{*path}",
            any(handle::<DocumentsRest>).with_state(documents_rest),
        )
        .route(
            "/hooks/{source}",
            post(handle::<Webhooks>)
                .with_state(gw.webhooks.clone())
                .layer(axum::extract::DefaultBodyLimit::max(
                    latchkey_events::MAX_PAYLOAD_BYTES,
                )),
        )
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        // Web apps (`[[apps]]`): by host, then by prefix, before any route.
        .layer(axum::middleware::from_fn_with_state(
            gw.apps.clone(),
            crate::targets::apps::dispatch,
        ))
        .layer(axum::middleware::from_fn(request_id))
        // Outermost: times every request, apps and refusals included.
        .layer(axum::middleware::from_fn_with_state(
            gw.pipe.metrics.clone(),
            crate::metrics::layer,
        ))
}

fn delete_route(target: Arc<AdminTarget>) -> axum::routing::MethodRouter {
    axum::routing::delete(handle::<AdminTarget>).with_state(target)
}
